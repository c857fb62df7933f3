import type { Endpoint } from '../core/endpoint.js';
import { CommandError } from '../errors.js';
import { type RunProcess, firstLine } from './exec.js';

export interface ConntrackPort {
  /**
   * Deletes tracked connections to `endpoint`: NAT rules only see new connections, so
   * one a container opened before the rule existed would otherwise keep working.
   * Returns the number deleted, or a reason it could not.
   */
  flush(endpoint: Endpoint): Promise<{ deleted: number } | { unavailable: string }>;
}

export function createConntrack(run: RunProcess): ConntrackPort {
  return {
    async flush(e) {
      const args = ['-D', '-f', e.family, '-p', 'tcp', '--orig-dst', e.address, '--orig-port-dst', String(e.port)];
      try {
        const r = await run('conntrack', args);
        const n = Number(/(\d+) flow entries have been deleted/.exec(r.stderr + r.stdout)?.[1] ?? 0);
        // conntrack exits 1 when nothing matched; that is success for us.
        if (r.code === 0 || /0 flow entries/.test(r.stderr)) return { deleted: n };
        return { unavailable: firstLine(r.stderr) || `conntrack exited ${r.code}` };
      } catch (err) {
        if (err instanceof CommandError) return { unavailable: err.message };
        throw err;
      }
    },
  };
}
