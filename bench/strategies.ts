import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { AgentPassProcess } from './agent-pass.js';
import { type Family, type NatLab, tool } from './nat-lab.js';
import { mustSucceed, reapedCpuMs } from './proc.js';

/**
 * One way to keep (or check) metadata protection on a host, or a bare read for
 * reference, bound to the lab it runs in. The engine runs every strategy once per round,
 * in the same loop, so their milliseconds are comparable, not just their ratios.
 */
export type StrategyId = 'save-full' | 'save-nat' | 'cli' | 'cli-js' | 'agent-pass' | 'check-insert' | 'seed';

export interface Sample {
  readonly ms: number;
  /** CPU time of the run (its processes' user + system), ms. */
  readonly cpuMs: number;
  /** What the run read, when it says (the in-agent pass: deciding or full). */
  readonly reads?: string;
}

export interface Strategy {
  readonly id: StrategyId;
  readonly label: string;
  /** One run on a converged table. `env` is the environment of every process it spawns (a PATH with shims to count them). */
  run(env: NodeJS.ProcessEnv): Promise<Sample>;
  /** Untimed work after each run, to give the next run the same table (the seed recipe's inserts taken out again). */
  after?(): Promise<void>;
}

/** Times `work`, which spawns and awaits processes one batch at a time, with their reaped CPU. */
async function timed(work: () => Promise<void>): Promise<Sample> {
  const c0 = reapedCpuMs();
  const t0 = performance.now();
  await work();
  return { ms: performance.now() - t0, cpuMs: reapedCpuMs() - c0 };
}

/** `iptables-<backend>-save` (every table) or `-t nat`, IPv4: the denominators of every ratio. */
export function bareSave(lab: NatLab, which: 'full' | 'nat'): Strategy {
  return {
    id: which === 'full' ? 'save-full' : 'save-nat',
    label: `bare ${tool('ipv4', lab.backend, 'save')}${which === 'full' ? ' (all tables)' : ' -t nat'}`,
    run: () => timed(async () => void mustSucceed(`${which} save`, which === 'full' ? await lab.saveFull('ipv4') : await lab.save('ipv4'))),
  };
}

/**
 * A converged `apply ARGS` as an operator (or a cron/boot job) runs it: `imds-guard`, the
 * installed command (dist/imds-guard, which starts from the CLI's snapshot, dist/cli.blob),
 * or, for comparison, `node dist/cli.js` (what it runs when the snapshot cannot serve).
 */
export function cliApply(lab: NatLab, cli: string, args: readonly string[], how: 'command' | 'node'): Strategy & { readonly args: readonly string[] } {
  const [file, argv] = how === 'command' ? [join(dirname(cli), 'imds-guard'), ['apply', ...args]] : [process.execPath, [cli, 'apply', ...args]];
  return {
    id: how === 'command' ? 'cli' : 'cli-js',
    label: how === 'command' ? 'imds-guard CLI: apply --no-docker (converged; dist/imds-guard, from the snapshot)' : 'the same, as node dist/cli.js (no snapshot)',
    args,
    run: (env) => timed(async () => void mustSucceed(`${file} ${argv.join(' ')}`, await lab.ns.run(file, argv, { env }))),
  };
}

/** The agent's converged pass in a warm process (agent-pass.ts); its CPU is what the process itself reports. */
export function agentPass(pass: AgentPassProcess): Strategy {
  return {
    id: 'agent-pass',
    label: 'imds-guard in-agent converged pass (warm, dist/ bundle)',
    run: async () => {
      const s = await pass.pass('agent');
      if (!s.converged) throw new Error(`the in-agent pass was not converged (read ${s.reads}, ${s.restores} restores)`);
      return { ms: s.ms, cpuMs: s.selfCpuMs + s.childCpuMs, reads: s.reads };
    },
  };
}

// What go-iptables' Exists + Insert amount to: `-C`, and `-I` when -C says missing.
// Rules like imds-guard's catch-all (its default REDIRECT target), per interface, straight
// in PREROUTING: the per-bridge recipe such scripts use.
const CHECKED_INTERFACES = ['docker0', 'docker_gwbridge', 'br-+'];
const ENDPOINT: Record<Family, string> = { ipv4: '169.254.169.254/32', ipv6: 'fd00:ec2::254/128' };

function checkedRule(family: Family, iface: string): string[] {
  return ['-i', iface, '-d', ENDPOINT[family], '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '1'];
}

/** 3 interfaces x IPv4 and IPv6: 6 `-C` on a converged table (and an `-I` for each one missing). */
export function checkThenInsert(lab: NatLab): Strategy {
  return {
    id: 'check-insert',
    label: 'check-then-insert (iptables -C per rule, -I if missing)',
    run: (env) =>
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

const SEED_BRIDGES = ['docker0', 'docker_gwbridge'];
const seedRule = (iface: string): string[] => ['-i', iface, '-p', 'tcp', '-d', '169.254.169.254', '--dport', '80', '-j', 'DNAT', '--to-destination', '1.1.1.1'];

/**
 * The recipe imds-guard replaces: an unconditional insert per bridge, IPv4 only. It adds
 * its two rules again on every run; `after` deletes them (untimed), so every run meets
 * the same table.
 */
export function seedRecipe(lab: NatLab): Strategy {
  const bin = tool('ipv4', lab.backend, '');
  return {
    id: 'seed',
    label: `seed recipe (${bin} -I x2)`,
    run: (env) =>
      timed(async () => {
        for (const iface of SEED_BRIDGES) mustSucceed('seed recipe insert', await lab.ns.run(bin, ['-t', 'nat', '-I', 'PREROUTING', ...seedRule(iface)], { env }));
      }),
    after: async () => {
      for (const iface of SEED_BRIDGES) mustSucceed('seed recipe cleanup', await lab.ns.run(bin, ['-t', 'nat', '-D', 'PREROUTING', ...seedRule(iface)]));
    },
  };
}
