import { performance } from 'node:perf_hooks';
import { type Backend, FAMILIES, type Family, type NatLab, openNatLab, tool } from './nat-lab.js';
import { cleanEnv, mustSucceed, removeTempDir, tempDir } from './proc.js';
import { type ProcessCount, type ShimDir, countProcesses, createShims } from './shims.js';
import { type Paired, type Stat, type Target, paired, stat } from './stats.js';
import { type Strategy, checkThenInsert, imdsGuardApply, seedRecipe } from './strategies.js';

/**
 * Part 1, issue "engine": what a no-op `apply` costs on a nat table holding 10,000
 * foreign rules, against a bare iptables-save of that table, and how the seed recipe
 * and a check-then-insert strategy compare on the same table.
 */
export interface EngineOptions {
  readonly cli: string;
  readonly backends: readonly Backend[];
  /** Published ports, i.e. DNAT rules in Docker's chain. */
  readonly published: number;
  /** Timed runs of each no-op measurement (after a warm-up). */
  readonly runs: number;
  /** Timed runs of each strategy on a converged table. */
  readonly sideRuns: number;
  /** Timed runs of each strategy from an unprotected table (each after a reset). */
  readonly unprotectedRuns: number;
  readonly progress: (line: string) => void;
}

export interface NoopLine {
  readonly label: string;
  readonly args: readonly string[];
  readonly timing: Paired;
  readonly processes: ProcessCount;
}

export interface SideBySide {
  readonly id: Strategy['id'];
  readonly label: string;
  readonly unprotected: Paired;
  readonly converged: Paired;
  readonly processes: { readonly unprotected: ProcessCount; readonly converged: ProcessCount };
  /** After three runs from the unprotected table. */
  readonly afterThreeRuns: Readonly<Record<Family, { readonly prerouting: number; readonly added: number }>>;
}

export interface BackendResult {
  readonly backend: Backend;
  readonly iptablesVersion: string;
  readonly foreignRules: Readonly<Record<Family, number>>;
  readonly foreignPrerouting: Readonly<Record<Family, number>>;
  /** Bare `iptables-<backend>-save -t nat` of the IPv4 table: the denominator of every ratio. */
  readonly baseline: Stat;
  /** IPv4 and IPv6 saves started together, as imds-guard does (for reference). */
  readonly bothFamiliesParallel: Paired;
  readonly noop: readonly NoopLine[];
  readonly sideBySide: readonly SideBySide[];
  readonly targets: readonly Target[];
}

export interface EngineResult {
  readonly options: Omit<EngineOptions, 'progress' | 'cli'>;
  readonly backends: readonly BackendResult[];
}

export const NOOP_RATIO_TARGET = 1.5;

export async function runEngine(opts: EngineOptions): Promise<EngineResult> {
  const backends: BackendResult[] = [];
  for (const backend of opts.backends) backends.push(await benchBackend(backend, opts));
  const { progress: _p, cli: _c, ...options } = opts;
  return { options, backends };
}

async function benchBackend(backend: Backend, opts: EngineOptions): Promise<BackendResult> {
  opts.progress(`engine/${backend}: loading ${opts.published} DNAT rules with one ${tool('ipv4', backend, 'restore')}`);
  const lab = await openNatLab(backend, opts.published);
  const shims = createShims();
  const bootDir = tempDir('local.d');
  try {
    const env = cleanEnv();
    const version = (await lab.ns.run(tool('ipv4', backend, ''), ['--version'])).stdout.trim();
    const foreignPrerouting = { ipv4: await lab.rules('ipv4', 'PREROUTING'), ipv6: await lab.rules('ipv6', 'PREROUTING') };
    const never = ['--no-docker', '--boot-script', 'never'];
    const auto = ['--no-docker', '--boot-script-dir', bootDir];
    const lines = [imdsGuardApply(opts.cli, never, 'no-op apply --no-docker --boot-script never'), imdsGuardApply(opts.cli, auto, 'no-op apply --no-docker --boot-script-dir TMP (auto)')];

    // The host already protected: the first runs write the chain and the boot script.
    for (const l of lines) await l.run(lab, env);
    opts.progress(`engine/${backend}: timing bare save vs no-op apply, ${opts.runs} interleaved rounds`);
    const noopTiming = await timeInterleaved(lab, env, lines, opts.runs);
    const noop: NoopLine[] = [];
    for (const [i, l] of lines.entries()) {
      noop.push({ label: l.label, args: l.args.map((a) => (a === bootDir ? '<tmp>' : a)), timing: paired(noopTiming.runs[i] ?? [], noopTiming.baseline), processes: await countRun(lab, shims, l) });
    }

    // imds-guard's converged column is the first no-op line, already timed above.
    const strategies: [Strategy, Paired | null][] = [
      [imdsGuardApply(opts.cli, never, 'imds-guard apply (--boot-script never)'), noop[0]?.timing ?? null],
      [checkThenInsert(), null],
      [seedRecipe(backend), null],
    ];
    const sideBySide: SideBySide[] = [];
    for (const [s, converged] of strategies) {
      opts.progress(`engine/${backend}: side by side: ${s.label}`);
      sideBySide.push(await compareStrategy(lab, shims, s, opts, converged));
    }

    const result = {
      backend,
      iptablesVersion: version,
      foreignRules: lab.foreign,
      foreignPrerouting,
      baseline: stat(noopTiming.baseline),
      bothFamiliesParallel: paired(noopTiming.both, noopTiming.baseline),
      noop,
      sideBySide,
    };
    return { ...result, targets: targetsOf(result) };
  } finally {
    lab.destroy();
    shims.remove();
    removeTempDir(bootDir);
  }
}

interface Interleaved {
  readonly baseline: number[];
  readonly both: number[];
  readonly runs: number[][];
}

/**
 * Baseline and measured runs take turns, so load from whatever else runs on the machine
 * (other test suites, a build) falls on both sides of each ratio alike.
 */
async function timeInterleaved(lab: NatLab, env: NodeJS.ProcessEnv, strategies: readonly Strategy[], rounds: number, warmup = 2): Promise<Interleaved> {
  const out: Interleaved = { baseline: [], both: [], runs: strategies.map(() => []) };
  for (let r = -warmup; r < rounds; r++) {
    const base = mustSucceed('baseline save', await lab.save('ipv4')).ms;
    const t0 = performance.now();
    await Promise.all(FAMILIES.map(async (f) => mustSucceed(`${f} save`, await lab.save(f))));
    const both = performance.now() - t0;
    const times: number[] = [];
    for (const s of strategies) times.push(await s.run(lab, env));
    if (r < 0) continue;
    out.baseline.push(base);
    out.both.push(both);
    times.forEach((t, i) => out.runs[i]!.push(t));
  }
  return out;
}

/** One run with the shims first on PATH, apart from the timed runs. */
async function countRun(lab: NatLab, shims: ShimDir, s: Strategy): Promise<ProcessCount> {
  shims.clear();
  await s.run(lab, cleanEnv({ PATH: shims.path }));
  return countProcesses(shims.read());
}

async function compareStrategy(lab: NatLab, shims: ShimDir, s: Strategy, opts: EngineOptions, convergedTiming: Paired | null): Promise<SideBySide> {
  const env = cleanEnv();
  const unprotected = { run: [] as number[], base: [] as number[] };
  for (let i = 0; i < opts.unprotectedRuns; i++) {
    await lab.reset();
    unprotected.base.push(mustSucceed('baseline save', await lab.save('ipv4')).ms);
    unprotected.run.push(await s.run(lab, env));
  }

  await lab.reset();
  const first = await countRun(lab, shims, s);
  const second = await countRun(lab, shims, s);
  await s.run(lab, env);
  const afterThreeRuns = {} as Record<Family, { prerouting: number; added: number }>;
  for (const f of FAMILIES) afterThreeRuns[f] = { prerouting: await lab.rules(f, 'PREROUTING'), added: (await lab.rules(f)) - lab.foreign[f] };

  let converged = convergedTiming;
  if (converged === null) {
    const t = await timeInterleaved(lab, env, [s], opts.sideRuns, 1);
    converged = paired(t.runs[0] ?? [], t.baseline);
  }
  return {
    id: s.id,
    label: s.label,
    unprotected: paired(unprotected.run, unprotected.base),
    converged,
    processes: { unprotected: first, converged: second },
    afterThreeRuns,
  };
}

function targetsOf(r: Omit<BackendResult, 'targets'>): Target[] {
  const targets: Target[] = [];
  for (const [i, line] of r.noop.entries()) {
    targets.push({ id: `${r.backend}.noop-ratio.${i + 1}`, what: `${r.backend}: ${line.label} / bare save`, target: `<= ${NOOP_RATIO_TARGET}x`, value: `${line.timing.ratio}x`, met: line.timing.ratio <= NOOP_RATIO_TARGET });
    const p = line.processes;
    const ok = FAMILIES.every((f) => p[f].saves === 1 && p[f].restores === 0 && p[f].rules === 0);
    const value = FAMILIES.map((f) => `${f} ${p[f].saves} save(s) ${p[f].restores} restore(s)`).join(', ');
    targets.push({ id: `${r.backend}.noop-processes.${i + 1}`, what: `${r.backend}: processes of ${line.label}`, target: '1 save per family, 0 restores', value, met: ok });
  }
  const ours = r.sideBySide.find((s) => s.id === 'imds-guard');
  if (ours !== undefined) {
    const ok = FAMILIES.every((f) => ours.afterThreeRuns[f].prerouting === r.foreignPrerouting[f] + 1);
    const value = FAMILIES.map((f) => `${f} ${ours.afterThreeRuns[f].prerouting} (Docker's ${r.foreignPrerouting[f]})`).join(', ');
    targets.push({ id: `${r.backend}.idempotent`, what: `${r.backend}: PREROUTING rules after 3 applies`, target: "Docker's + 1 jump", value, met: ok });
  }
  return targets;
}
