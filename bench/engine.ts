import { createTestCgroup } from '../test/helpers/cgroup.js';
import { type AgentPassProcess, startAgentPass } from './agent-pass.js';
import { countRules, dockerNat4 } from './fixture.js';
import { type Backend, type Family, type NatLab, openNatLab, tool } from './nat-lab.js';
import { cleanEnv, mustSucceed } from './proc.js';
import { type ProcessCount, type ShimDir, countProcesses, createShims } from './shims.js';
import { type Paired, type Target, median, paired, round } from './stats.js';
import { type Sample, type Strategy, type StrategyId, agentPass, bareSave, checkThenInsert, cliApply, seedRecipe } from './strategies.js';

/**
 * Issue "a converged check that costs only what it owns": every strategy measured in one
 * loop, per backend and per size of the foreign nat table. Three namespaces hold the same
 * Docker-like table (published ports as DNAT rules): one protected by imds-guard (bare
 * saves, the CLI's converged apply and the in-agent pass run there), one with
 * check-then-insert's six rules, one for the seed recipe (whose inserts are taken out
 * after each run). Each round runs every strategy once, in a rotating order, so other load
 * on the machine falls on all of them alike and their milliseconds are comparable.
 */
export interface EngineOptions {
  readonly cli: string;
  readonly backends: readonly Backend[];
  /** Published ports (DNAT rules in DOCKER), one loop per size. */
  readonly sizes: readonly number[];
  /** The size the targets are judged on. */
  readonly headline: number;
  /** Rounds at the headline size (after two warm-up rounds). */
  readonly runs: number;
  /** Rounds at the other sizes. */
  readonly sizeRuns: number;
  readonly progress: (line: string) => void;
}

export interface StrategyFigures {
  readonly id: StrategyId;
  readonly label: string;
  /** Against the bare full save sampled in the same loop. */
  readonly time: Paired;
  /** Median over the median of the bare `-t nat` save of the same loop. */
  readonly ratioToNatSave: number;
  /** Mean CPU time per run (user + system of its processes), ms. */
  readonly cpuMs: number;
  /** What its runs read, when they say (the in-agent pass), with counts. */
  readonly reads: Readonly<Record<string, number>>;
}

export interface SizeResult {
  readonly published: number;
  readonly foreignRules: Readonly<Record<Family, number>>;
  readonly rounds: number;
  readonly strategies: readonly StrategyFigures[];
  /** PREROUTING of the protected namespace after the loop, and Docker's own. */
  readonly prerouting: { readonly protectedNs: number; readonly docker: number };
}

export interface BackendResult {
  readonly backend: Backend;
  readonly iptablesVersion: string;
  /** The size the targets are judged on. */
  readonly headline: number;
  readonly sizes: readonly SizeResult[];
  /** Processes of one converged run at the headline size (PATH shims, apart from the timed runs). */
  readonly processes: Readonly<Partial<Record<StrategyId, ProcessCount>>>;
  readonly targets: readonly Target[];
}

export interface EngineResult {
  readonly options: Omit<EngineOptions, 'progress' | 'cli'>;
  /** How the in-agent pass is run (for the reader of latest.json). */
  readonly inAgentPass: string;
  readonly backends: readonly BackendResult[];
}

/** The issue's targets, on the headline size (10k), as ratios to a bare full save of the same loop. */
export const TARGETS: Readonly<Record<Backend, { readonly agentPass: number; readonly cli: number }>> = {
  nft: { agentPass: 0.2, cli: 1.3 },
  legacy: { agentPass: 1.0, cli: 3.5 },
};
/** "Does not grow": the in-agent pass at the largest table over the smallest, nft. */
export const FLAT_TARGET = 1.2;

export async function runEngine(opts: EngineOptions): Promise<EngineResult> {
  const backends: BackendResult[] = [];
  for (const backend of opts.backends) backends.push(await benchBackend(backend, opts));
  const { progress: _p, cli: _c, ...options } = opts;
  return { options, inAgentPass: 'reconcile(config, ports, opts) from dist/chunks/reconcile-*.js in one warm node process per namespace, opts chosen as src/app/agent.ts does', backends };
}

async function benchBackend(backend: Backend, opts: EngineOptions): Promise<BackendResult> {
  const sizes: SizeResult[] = [];
  let processes: BackendResult['processes'] = {};
  let version = '';
  // The host-network side needs an existing container parent cgroup; a throwaway one keeps
  // every pass the same whatever cgroups this machine has (and creates none of Docker's).
  const cgroup = createTestCgroup();
  try {
    for (const size of opts.sizes) {
      const headline = size === opts.headline;
      const rounds = headline ? opts.runs : opts.sizeRuns;
      opts.progress(`engine/${backend}/${size}: loading three namespaces with ${size} DNAT rules`);
      const loop = await openLoop(backend, size, opts.cli, cgroup.path);
      try {
        version ||= (await loop.protectedNs.ns.run(tool('ipv4', backend, ''), ['--version'])).stdout.trim();
        opts.progress(`engine/${backend}/${size}: ${rounds} interleaved rounds of ${loop.strategies.length} strategies`);
        sizes.push(await timeLoop(loop, size, rounds));
        if (headline) processes = await countAll(loop, opts.cli, cgroup.path);
      } finally {
        loop.close();
      }
    }
  } finally {
    cgroup.destroy();
  }
  const partial = { backend, iptablesVersion: version, headline: opts.headline, sizes, processes };
  return { ...partial, targets: targetsOf(partial) };
}

interface Loop {
  readonly protectedNs: NatLab;
  readonly labs: readonly NatLab[];
  readonly pass: AgentPassProcess;
  readonly strategies: readonly Strategy[];
  close(): void;
}

const cliArgs = (cgroupParent: string): string[] => ['--no-docker', '--boot-script', 'never', '--cgroup-parent', cgroupParent];
const passFlags = (cgroupParent: string): Record<string, unknown> => ({ docker: false, bootScript: 'never', cgroupParent });

async function openLoop(backend: Backend, size: number, cli: string, cgroupParent: string): Promise<Loop> {
  const labs: NatLab[] = [];
  let pass: AgentPassProcess | undefined;
  try {
    for (let i = 0; i < 3; i++) labs.push(await openNatLab(backend, size));
    const [guarded, checked, seeded] = labs as [NatLab, NatLab, NatLab];
    const env = cleanEnv();
    // Converge both protected tables: the runs below all meet a host already protected.
    mustSucceed('first apply', await guarded.ns.run(process.execPath, [cli, 'apply', ...cliArgs(cgroupParent)], { env }));
    const check = checkThenInsert(checked);
    await check.run(env);
    pass = await startAgentPass(guarded.ns, cli, passFlags(cgroupParent));
    await pass.pass('agent'); // the agent's first pass reads everything
    const strategies = [bareSave(guarded, 'full'), bareSave(guarded, 'nat'), cliApply(guarded, cli, cliArgs(cgroupParent), 'command'), cliApply(guarded, cli, cliArgs(cgroupParent), 'node'), agentPass(pass), check, seedRecipe(seeded)];
    const p = pass;
    return { protectedNs: guarded, labs, pass: p, strategies, close: () => (p.stop(), labs.forEach((l) => l.destroy())) };
  } catch (e) {
    pass?.stop();
    labs.forEach((l) => l.destroy());
    throw e;
  }
}

async function timeLoop(loop: Loop, size: number, rounds: number, warmup = 2): Promise<SizeResult> {
  const env = cleanEnv();
  const samples = new Map<StrategyId, Sample[]>(loop.strategies.map((s) => [s.id, []]));
  for (let r = -warmup; r < rounds; r++) {
    // A rotating order: no strategy always runs right after the same other one.
    const n = loop.strategies.length;
    const offset = ((r % n) + n) % n;
    for (let i = 0; i < n; i++) {
      const s = loop.strategies[(i + offset) % n]!;
      const sample = await s.run(env);
      await s.after?.();
      if (r >= 0) samples.get(s.id)!.push(sample);
    }
  }
  const ms = (id: StrategyId): number[] => (samples.get(id) ?? []).map((x) => x.ms);
  const full = ms('save-full');
  const nat = median(ms('save-nat'));
  const strategies = loop.strategies.map((s): StrategyFigures => {
    const xs = samples.get(s.id) ?? [];
    const reads: Record<string, number> = {};
    for (const x of xs) if (x.reads !== undefined) reads[x.reads] = (reads[x.reads] ?? 0) + 1;
    return { id: s.id, label: s.label, time: paired(ms(s.id), full), ratioToNatSave: round(median(ms(s.id)) / nat, 2), cpuMs: round(xs.reduce((a, x) => a + x.cpuMs, 0) / Math.max(1, xs.length)), reads };
  });
  const lab = loop.protectedNs;
  return { published: size, foreignRules: lab.foreign, rounds, strategies, prerouting: { protectedNs: await lab.rules('ipv4', 'PREROUTING'), docker: countRules(dockerNat4(0), 'PREROUTING') } };
}

/** One converged run of each strategy with the shims first on PATH (its own warm process for the in-agent pass). */
async function countAll(loop: Loop, cli: string, cgroupParent: string): Promise<BackendResult['processes']> {
  const shims = createShims();
  try {
    const out: Partial<Record<StrategyId, ProcessCount>> = {};
    const env = cleanEnv({ PATH: shims.path });
    for (const s of loop.strategies) {
      if (s.id === 'agent-pass' || s.id === 'save-full' || s.id === 'save-nat') continue;
      out[s.id] = await countRun(shims, () => s.run(env));
      await s.after?.();
    }
    const counted = await startAgentPass(loop.protectedNs.ns, cli, passFlags(cgroupParent), { PATH: shims.path });
    try {
      await counted.pass('agent'); // the first, full read
      out['agent-pass'] = await countRun(shims, () => counted.pass('agent'));
    } finally {
      counted.stop();
    }
    return out;
  } finally {
    shims.remove();
  }
}

async function countRun(shims: ShimDir, run: () => Promise<unknown>): Promise<ProcessCount> {
  shims.clear();
  await run();
  return countProcesses(shims.read());
}

/** A process that changes a table: a restore (not `--test`, which only parses), or a rule command that is not -C/-S/-L. */
function isWrite(call: string): boolean {
  const [name = '', ...args] = call.split(' ');
  if (/-restore$/.test(name)) return !args.includes('--test');
  if (!/^ip6?tables(-nft|-legacy)?$/.test(name)) return false;
  return args.some((a) => ['-A', '-I', '-D', '-R', '-F', '-N', '-X', '-P', '-E', '-Z', '--append', '--insert', '--delete', '--replace', '--flush', '--new-chain', '--delete-chain', '--policy'].includes(a));
}

const figure = (size: SizeResult | undefined, id: StrategyId): StrategyFigures | undefined => size?.strategies.find((s) => s.id === id);

function targetsOf(r: Omit<BackendResult, 'targets'>): Target[] {
  const b = r.backend;
  const out: Target[] = [];
  const head = r.sizes.find((s) => s.published === r.headline);
  const k = `${Math.round(r.headline / 1000)}k`;
  const pass = figure(head, 'agent-pass');
  const cli = figure(head, 'cli');
  const cliJs = figure(head, 'cli-js');
  const reads = (f: StrategyFigures): string => (Object.keys(f.reads).length === 0 ? '' : `, read ${Object.entries(f.reads).map(([w, n]) => `${w} x${n}`).join(', ')}`);
  if (pass !== undefined) {
    out.push({ id: `${b}.agent-pass`, what: `${b}: in-agent converged pass / bare full save, ${k} rules`, target: `<= ${TARGETS[b].agentPass}x`, value: `${pass.time.ratio}x (${pass.time.run.median} ms vs ${pass.time.baseline.median} ms; ${pass.ratioToNatSave}x a -t nat save${reads(pass)})`, met: pass.time.ratio <= TARGETS[b].agentPass });
  }
  if (cli !== undefined) {
    out.push({ id: `${b}.cli`, what: `${b}: CLI (imds-guard) converged apply --no-docker / bare full save, ${k} rules`, target: `<= ${TARGETS[b].cli}x`, value: `${cli.time.ratio}x (${cli.time.run.median} ms vs ${cli.time.baseline.median} ms; ${cli.ratioToNatSave}x a -t nat save${cliJs === undefined ? '' : `; as node dist/cli.js: ${cliJs.time.ratio}x, ${cliJs.time.run.median} ms`})`, met: cli.time.ratio <= TARGETS[b].cli });
  }
  const passes = r.sizes.map((s) => ({ size: s.published, f: figure(s, 'agent-pass') })).filter((x) => x.f !== undefined);
  if (passes.length >= 2) {
    const small = passes[0]!;
    const large = passes.at(-1)!;
    const growth = round(large.f!.time.run.median / small.f!.time.run.median, 2);
    const value = `${growth}x (${passes.map((p) => `${p.size}: ${p.f!.time.run.median} ms`).join(', ')})`;
    if (b === 'nft') out.push({ id: `${b}.agent-pass-flat`, what: `${b}: in-agent converged pass, ${large.size} rules over ${small.size}`, target: `<= ${FLAT_TARGET}x (does not grow)`, value, met: growth <= FLAT_TARGET });
  }
  for (const id of ['cli', 'agent-pass'] as const) {
    const p = r.processes[id];
    if (p === undefined) continue;
    const writes = p.calls.filter(isWrite);
    out.push({ id: `${b}.${id}-writes`, what: `${b}: writes of a converged ${id === 'cli' ? 'CLI apply' : 'in-agent pass'}`, target: '0 restores, 0 rule changes', value: `${writes.length} (${p.total} processes${writes.length > 0 ? `: ${writes.join('; ')}` : ''})`, met: writes.length === 0 });
  }
  if (head !== undefined) {
    const wanted = head.prerouting.docker + 1;
    out.push({ id: `${b}.idempotent`, what: `${b}: PREROUTING rules after the loop's applies and passes`, target: `Docker's ${head.prerouting.docker} + 1 jump`, value: String(head.prerouting.protectedNs), met: head.prerouting.protectedNs === wanted });
  }
  return out;
}
