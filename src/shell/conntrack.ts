import { networkInterfaces } from 'node:os';
import { flowsToCut, parseConntrackList } from '../core/conntrack-cut.js';
import type { Endpoint } from '../core/endpoint.js';
import { CommandError } from '../errors.js';
import { type RunProcess, firstLine } from './exec.js';

export interface ConntrackPort {
  /**
   * Deletes the tracked connections to `endpoint` that came from containers (not the
   * host's own): NAT rules only see new connections, so one a container opened before the
   * rule existed would otherwise keep working. Returns the number deleted, or why not.
   */
  flush(endpoint: Endpoint): Promise<{ deleted: number } | { unavailable: string }>;
}

/** The addresses of this network namespace's interfaces (getifaddrs runs in our namespace). */
function localAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address.split('%')[0]!);
  return out;
}

export function createConntrack(run: RunProcess, local: () => ReadonlySet<string> = localAddresses): ConntrackPort {
  const conntrack = async (args: string[]): Promise<{ code: number; stdout: string; stderr: string } | { unavailable: string }> => {
    try {
      return await run('conntrack', args);
    } catch (err) {
      if (err instanceof CommandError) return { unavailable: err.message };
      throw err;
    }
  };
  return {
    async flush(e) {
      const listed = await conntrack(['-L', '-f', e.family, '-p', 'tcp', '--orig-dst', e.address, '--orig-port-dst', String(e.port)]);
      if ('unavailable' in listed) return listed;
      if (listed.code !== 0) return { unavailable: firstLine(listed.stderr) || `conntrack -L exited ${listed.code}` };
      let deleted = 0;
      for (const f of flowsToCut(parseConntrackList(listed.stdout), local())) {
        // The exact original tuple: nothing but this flow is named.
        const r = await conntrack(['-D', '-f', f.family, '-p', 'tcp', '--orig-src', f.src, '--orig-dst', f.dst, '--orig-port-src', String(f.sport), '--orig-port-dst', String(f.dport)]);
        if ('unavailable' in r) return r;
        // Exit 1 with "0 flow entries": the flow ended on its own meanwhile.
        if (r.code === 0) deleted += Number(/(\d+) flow entries have been deleted/.exec(r.stderr + r.stdout)?.[1] ?? 1);
      }
      return { deleted };
    },
  };
}
