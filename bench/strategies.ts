import { performance } from 'node:perf_hooks';
import { type Backend, type Family, type NatLab, tool } from './nat-lab.js';
import { mustSucceed } from './proc.js';

/** One way to put metadata protection on a host, run once against a lab's nat tables. */
export interface Strategy {
  readonly id: 'imds-guard' | 'check-insert' | 'seed';
  readonly label: string;
  /** Runs it once; resolves with the wall time from its first process's spawn to its last one's end. */
  run(lab: NatLab, env: NodeJS.ProcessEnv): Promise<number>;
}

async function timed(work: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await work();
  return performance.now() - t0;
}

/** `node dist/cli.js apply ARGS`, as an operator (or a boot/cron job) runs it. */
export function imdsGuardApply(cli: string, args: readonly string[], label: string): Strategy & { readonly args: readonly string[] } {
  return {
    id: 'imds-guard',
    label,
    args,
    run: (lab, env) => timed(async () => void mustSucceed(`imds-guard apply ${args.join(' ')}`, await lab.ns.run(process.execPath, [cli, 'apply', ...args], { env }))),
  };
}

// What go-iptables' Exists + Insert amount to: `-C`, and `-I` when -C says missing.
// Same rules imds-guard keeps (its default REDIRECT target), straight in PREROUTING.
const CHECKED_INTERFACES = ['docker0', 'docker_gwbridge', 'br-+'];
const ENDPOINT: Record<Family, string> = { ipv4: '169.254.169.254/32', ipv6: 'fd00:ec2::254/128' };

function checkedRule(family: Family, iface: string): string[] {
  return ['-i', iface, '-d', ENDPOINT[family], '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '1'];
}

export function checkThenInsert(): Strategy {
  return {
    id: 'check-insert',
    label: 'check-then-insert (-C, -I if missing)',
    run: (lab, env) =>
      timed(async () => {
        for (const family of ['ipv4', 'ipv6'] as const) {
          for (const iface of CHECKED_INTERFACES) {
            const bin = tool(family, lab.backend, '');
            const spec = checkedRule(family, iface);
            const check = await lab.ns.run(bin, ['-w', '5', '-t', 'nat', '-C', 'PREROUTING', ...spec], { env });
            if (check.code === 0) continue;
            if (check.code !== 1) throw new Error(`${bin} -C exited ${check.code}: ${check.stderr.trim()}`);
            mustSucceed(`${bin} -I`, await lab.ns.run(bin, ['-w', '5', '-t', 'nat', '-I', 'PREROUTING', '1', ...spec], { env }));
          }
        }
      }),
  };
}

/** The recipe imds-guard replaces: an unconditional insert per bridge, IPv4 only. */
export function seedRecipe(backend: Backend): Strategy {
  return {
    id: 'seed',
    label: `seed recipe (${tool('ipv4', backend, '')} -I x2)`,
    run: (lab, env) =>
      timed(async () => {
        for (const iface of ['docker0', 'docker_gwbridge']) {
          const args = ['-t', 'nat', '-I', 'PREROUTING', '-i', iface, '-p', 'tcp', '-d', '169.254.169.254', '--dport', '80', '-j', 'DNAT', '--to-destination', '1.1.1.1'];
          mustSucceed('seed recipe insert', await lab.ns.run(tool('ipv4', lab.backend, ''), args, { env }));
        }
      }),
  };
}
