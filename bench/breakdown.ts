import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { createTestCgroup } from '../test/helpers/cgroup.js';
import { lazyChunk } from './bundle.js';
import { type CpuProfile, type ProfileSummary, averageSummaries, sourceMapLocator, summarizeProfile } from './cpu-profile.js';
import type { BenchContext, BenchModule } from './module.js';
import { FAMILIES, type NatLab, openNatLab } from './nat-lab.js';
import { cleanEnv, mustSucceed, removeTempDir, runTimed, tempDir } from './proc.js';
import { type ShimCall, createShims } from './shims.js';
import { type Stat, median, round, stat } from './stats.js';
import { ms, renderTable } from './table.js';

/**
 * Where a converged `apply` spends its time, on the nft backend's 10,000-rule table:
 * node's own start-up, loading the CLI's bundle, the iptables processes it runs (on a
 * converged nft host, listings of the deciding chains), and what runs around them
 * (parse, plan, print, exit). Four views that should agree: interleaved wall times of
 * partial programs, a timeline from shim timestamps, the load time of each chunk apply
 * imports, in a fresh node, and V8 CPU profiles mapped back to src/. And a floor: node
 * running the same iptables processes all at once and nothing else. (The pass in a warm
 * process, the agent's, is the engine's "in-agent pass".)
 *
 * dist/ is an esbuild bundle (scripts/build.mjs): dist/cli.js, plus a chunk per module
 * the CLI imports lazily, named after it (`import('./app/settings.js')` became
 * `import("./chunks/settings-HASH.js")`). Those chunks are what apply loads, so the
 * import figures use them; a module the bundle does not expose on its own
 * (core/saved-table) is bundled here with esbuild's API into the run's temp dir.
 */
const noopArgs = (cgroupParent: string): string[] => ['apply', '--no-docker', '--boot-script', 'never', '--cgroup-parent', cgroupParent];
const DETAIL_RUNS = 3;
// Breakdown rounds are capped: six commands a round, and the engine already has the headline ratio.
const MAX_WALL_ROUNDS = 9;

/**
 * The least any Node implementation of this apply can cost: start node, run the iptables
 * processes the apply ran (as the shims logged them), all at once, read their output, exit.
 */
function floorScript(calls: readonly { file: string; args: readonly string[] }[]): string {
  return `const { spawn } = require('node:child_process');
const run = (f, a) => new Promise((ok, fail) => { const c = spawn(f, a); const out = []; c.stdout.on('data', (b) => out.push(b)); c.on('error', fail); c.on('close', () => ok(Buffer.concat(out).toString('utf8'))); });
Promise.all(${JSON.stringify(calls.map((c) => [c.file, c.args]))}.map(([f, a]) => run(f, a)));`;
}

interface Command {
  readonly label: string;
  readonly file: string;
  readonly args: readonly string[];
}

export interface BreakdownResult {
  readonly backend: 'nft';
  readonly wall: readonly { readonly label: string; readonly stat: Stat; readonly ratioToSave: number }[];
  readonly timeline: { readonly beforeFirstSave: number; readonly saves: number; readonly afterSaves: number; readonly total: number; readonly runs: number; readonly processes: readonly string[] };
  readonly imports: readonly { readonly step: string; readonly ms: number }[];
  readonly parse: { readonly moduleLoad: number; readonly parseSave: number; readonly chainRules: number } | { readonly skipped: string };
  readonly profile: ProfileSummary;
}

export const breakdownModule: BenchModule = {
  name: 'breakdown',
  description: "where a converged apply's time goes (nft backend, converged 10,000-rule table)",
  async run(ctx) {
    const result = await runBreakdown(ctx);
    return { result, text: renderBreakdown(result), targets: [] };
  },
};

async function runBreakdown(ctx: BenchContext): Promise<BreakdownResult> {
  const lab = await openNatLab('nft', ctx.args.rules);
  const tmp = tempDir('breakdown');
  const cgroup = createTestCgroup();
  try {
    const env = cleanEnv();
    const args = noopArgs(cgroup.path);
    const launcher = join(dirname(ctx.cli), 'imds-guard');
    mustSucceed('converging apply', await lab.ns.run(process.execPath, [ctx.cli, ...args], { env }));
    ctx.progress('breakdown: timeline (shims)');
    const timeline = await timelineOf(lab, ctx, args);
    const commands: Command[] = [
      { label: 'bare iptables-nft-save -t nat (IPv4) = baseline', file: 'iptables-nft-save', args: ['-t', 'nat'] },
      { label: 'node -e 0 (an empty node: start-up + exit)', file: process.execPath, args: ['-e', '0'] },
      { label: 'node dist/cli.js --version (the entry and its static chunks)', file: process.execPath, args: [ctx.cli, '--version'] },
      { label: 'converged apply --no-docker --boot-script never', file: process.execPath, args: [ctx.cli, ...args] },
      { label: 'dist/imds-guard --version (the launcher, from the snapshot dist/cli.blob)', file: launcher, args: ['--version'] },
      { label: 'dist/imds-guard converged apply (the same apply, from the snapshot)', file: launcher, args },
      { label: `floor: node -e running the apply's ${timeline.calls.length} reads (saves, listings) at once`, file: process.execPath, args: ['-e', floorScript(timeline.calls)] },
    ];
    ctx.progress(`breakdown: ${Math.min(ctx.args.runs, MAX_WALL_ROUNDS)} interleaved rounds of ${commands.length} commands`);
    const wall = await timeCommands(lab, env, commands, Math.min(ctx.args.runs, MAX_WALL_ROUNDS));
    ctx.progress('breakdown: imports, parse, cpu profiles');
    const imports = await importSteps(ctx);
    const parse = await coldParse(lab, ctx, tmp);
    const profile = await profileRuns(lab, ctx, tmp, args);
    return { backend: 'nft', wall, timeline: timeline.phases, imports, parse, profile };
  } finally {
    lab.destroy();
    cgroup.destroy();
    removeTempDir(tmp);
  }
}

async function timeCommands(lab: NatLab, env: NodeJS.ProcessEnv, commands: readonly Command[], rounds: number): Promise<BreakdownResult['wall']> {
  const samples = commands.map(() => [] as number[]);
  for (let r = -2; r < rounds; r++) {
    for (const [i, c] of commands.entries()) {
      const done = mustSucceed(c.label, await lab.ns.run(c.file, c.args, { env }));
      if (r >= 0) samples[i]!.push(done.ms);
    }
  }
  const base = median(samples[0] ?? []);
  return commands.map((c, i) => ({ label: c.label, stat: stat(samples[i] ?? []), ratioToSave: round(median(samples[i] ?? []) / base, 2) }));
}

/** Phases of a converged apply, from the shims' timestamps of the iptables processes it starts. */
async function timelineOf(lab: NatLab, ctx: BenchContext, args: readonly string[]): Promise<{ phases: BreakdownResult['timeline']; calls: { file: string; args: string[] }[] }> {
  const shims = createShims();
  try {
    const phases = { before: [] as number[], saves: [] as number[], after: [] as number[], total: [] as number[] };
    let calls: ShimCall[] = [];
    let listed: ShimCall[] = [];
    for (let i = 0; i < DETAIL_RUNS; i++) {
      shims.clear();
      const r = mustSucceed('apply (timeline)', await lab.ns.run(process.execPath, [ctx.cli, ...args], { env: cleanEnv({ PATH: shims.path }) }));
      calls = shims.read().filter((c) => c.kind === 'save' || c.kind === 'rule' || c.kind === 'restore');
      // The floor reruns what reads; a restore (the cgroup match probe, --test) needs its payload on stdin.
      listed = calls.filter((c) => c.kind !== 'restore');
      if (calls.length === 0) throw new Error('the converged apply ran no iptables process through the shims');
      const first = Math.min(...calls.map((c) => c.startMs));
      const last = Math.max(...calls.map((c) => c.endMs));
      phases.before.push(first - r.startedAt);
      phases.saves.push(last - first);
      phases.after.push(r.startedAt + r.ms - last);
      phases.total.push(r.ms);
    }
    return {
      phases: { beforeFirstSave: round(median(phases.before)), saves: round(median(phases.saves)), afterSaves: round(median(phases.after)), total: round(median(phases.total)), runs: DETAIL_RUNS, processes: calls.map((c) => `${c.name} ${c.args}`) },
      // The shims log "$*": the listings and saves apply runs have no argument with a space.
      calls: listed.map((c) => ({ file: c.name, args: c.args === '' ? [] : c.args.split(' ') })),
    };
  } finally {
    shims.remove();
  }
}

/** The modules src/program.ts's apply action imports lazily, in its order, and what each brings. */
const APPLY_IMPORTS: readonly (readonly [module: string, brings: string])[] = [
  ['app/settings', 'config file, layers'],
  ['shell/logger', 'pino and its dependencies'],
  ['app/wiring', 'shell adapters; dockerode stays lazy'],
  ['app/reconcile', 'observe, parse, desired, plan, payload'],
  ['core/findings', ''],
  ['app/summary', 'the printed summary'],
];

const lazyChunkOf = (ctx: BenchContext, module: string): string => lazyChunk(ctx.cli, module);

/** The chunks apply loads, in its order, each timed in one fresh node (outside the netns: no iptables runs). */
async function importSteps(ctx: BenchContext): Promise<BreakdownResult['imports']> {
  const steps: [string, string][] = [
    ['dist/cli.js + static chunks (commander, zod, config, errors), running --version', pathToFileURL(ctx.cli).href],
    ...APPLY_IMPORTS.map(([module, brings]): [string, string] => {
      const chunk = lazyChunkOf(ctx, module);
      return [`${chunk.slice(chunk.lastIndexOf('/chunks/') + 1)}: src/${module}${brings === '' ? '' : ` (${brings})`}`, pathToFileURL(chunk).href];
    }),
  ];
  // Importing the entry runs the CLI: with --version it prints one line and returns.
  const script = `process.argv = [process.execPath, ${JSON.stringify(ctx.cli)}, '--version'];
const out = [];
for (const [step, url] of ${JSON.stringify(steps)}) {
  const t = performance.now();
  await import(url);
  out.push({ step, ms: performance.now() - t });
}
process.stdout.write('\\n' + JSON.stringify(out) + '\\n');`;
  const runs: { step: string; ms: number }[][] = [];
  for (let i = 0; i < DETAIL_RUNS; i++) {
    const r = mustSucceed('import timing', await runTimed(process.execPath, ['--input-type=module', '-e', script], { cwd: ctx.repo, env: cleanEnv() }));
    runs.push(JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '[]') as { step: string; ms: number }[]);
  }
  return steps.map(([step], i) => ({ step, ms: round(median(runs.map((r) => r[i]?.ms ?? Number.NaN))) }));
}

/**
 * parseSave on the converged IPv4 save, cold (a fresh node per run, as in an apply that
 * reads everything). In dist/ the parser has no chunk of its own (it shares one with the
 * rest of reconcile), so core/saved-table is bundled alone here, with the output options
 * of scripts/build.mjs.
 */
async function coldParse(lab: NatLab, ctx: BenchContext, tmp: string): Promise<BreakdownResult['parse']> {
  const module = join(tmp, 'saved-table.mjs');
  await build({
    entryPoints: [join(ctx.repo, 'src', 'core', 'saved-table.ts')],
    outfile: module,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    minifyWhitespace: true,
    minifySyntax: true,
    logLevel: 'error',
  });
  const saveFile = join(tmp, 'all4.save');
  writeFileSync(saveFile, mustSucceed('save', await lab.saveFull('ipv4')).stdout);
  const script = `import { readFileSync } from 'node:fs';
const text = readFileSync(${JSON.stringify(saveFile)}, 'utf8');
let t = performance.now();
const m = await import(${JSON.stringify(pathToFileURL(module).href)});
const moduleLoad = performance.now() - t;
if (typeof m.parseSave !== 'function') { process.stdout.write('null'); process.exit(0); }
t = performance.now();
const tables = m.parseSave(text);
const parseSave = performance.now() - t;
t = performance.now();
const nat = tables.get('nat');
if (typeof m.chainRules === 'function' && nat !== undefined) for (const c of ['PREROUTING', 'IMDS-GUARD']) m.chainRules(nat, c);
const chainRules = performance.now() - t;
process.stdout.write(JSON.stringify({ moduleLoad, parseSave, chainRules }));`;
  const runs: { moduleLoad: number; parseSave: number; chainRules: number }[] = [];
  for (let i = 0; i < DETAIL_RUNS; i++) {
    const r = mustSucceed('cold parse', await runTimed(process.execPath, ['--input-type=module', '-e', script], { env: cleanEnv() }));
    const v = JSON.parse(r.stdout) as (typeof runs)[number] | null;
    if (v === null) return { skipped: 'src/core/saved-table.ts no longer exports parseSave' };
    runs.push(v);
  }
  const m = (k: keyof (typeof runs)[number]): number => round(median(runs.map((r) => r[k])));
  return { moduleLoad: m('moduleLoad'), parseSave: m('parseSave'), chainRules: m('chainRules') };
}

async function profileRuns(lab: NatLab, ctx: BenchContext, tmp: string, args: readonly string[]): Promise<ProfileSummary> {
  const locate = sourceMapLocator();
  const summaries: ProfileSummary[] = [];
  for (let i = 0; i < DETAIL_RUNS; i++) {
    const dir = join(tmp, `prof-${i}`);
    mkdirSync(dir);
    mustSucceed('apply --cpu-prof', await lab.ns.run(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, ctx.cli, ...args], { env: cleanEnv() }));
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) throw new Error('node --cpu-prof wrote no profile');
    summaries.push(summarizeProfile(JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile, locate));
  }
  return averageSummaries(summaries);
}

export function renderBreakdown(r: BreakdownResult): string {
  const apply = r.wall.find((w) => w.label.startsWith('converged apply'))?.stat.median ?? Number.NaN;
  const share = (x: number): string => `${Math.round((100 * x) / apply)}%`;
  const wall = renderTable(
    ['command (nft, converged table)', '>median ms', '>ratio to save', '>share of apply'],
    r.wall.map((w) => [w.label, ms(w.stat.median), `${w.ratioToSave.toFixed(2)}x`, share(w.stat.median)]),
  );
  const t = r.timeline;
  const timeline = renderTable(
    [`timeline of a converged apply (shim timestamps, median of ${t.runs})`, '>ms', '>share'],
    [
      ['spawn -> first iptables process starts (node start-up, module loading, config)', ms(t.beforeFirstSave), `${Math.round((100 * t.beforeFirstSave) / t.total)}%`],
      [`first iptables process starts -> last one ends (${FAMILIES.join(' and ')})`, ms(t.saves), `${Math.round((100 * t.saves) / t.total)}%`],
      ['last one ends -> exit (parse, plan, print, exit)', ms(t.afterSaves), `${Math.round((100 * t.afterSaves) / t.total)}%`],
      ['total (with shims: a shell and two `date` per process)', ms(t.total), ''],
    ],
  );
  const importTotal = r.imports.reduce((a, s) => a + s.ms, 0);
  const imports = renderTable(
    [`chunks apply loads, in its order (fresh node, median of ${t.runs})`, '>ms'],
    [...r.imports.map((s) => [s.step, ms(s.ms)]), ['total', ms(importTotal)]],
  );
  const parse =
    'skipped' in r.parse
      ? `parse: skipped (${r.parse.skipped})`
      : `cold parse of the converged IPv4 save (all tables, what a full read parses): load src/core/saved-table bundled alone ${ms(r.parse.moduleLoad)} ms, parseSave ${ms(r.parse.parseSave)} ms, chainRules(PREROUTING, IMDS-GUARD) ${ms(r.parse.chainRules)} ms`;
  const groups = Object.entries(r.profile.groups).sort((a, b) => b[1] - a[1]);
  const profile = renderTable(
    [`cpu profile of a converged apply, self time by origin via dist/'s sourcemaps (mean of ${t.runs}; profiler starts after node's bootstrap, ${ms(r.profile.durationMs)} ms profiled)`, '>ms'],
    groups.filter(([, v]) => v >= 0.5).map(([g, v]) => [g, ms(v)]),
  );
  const top = renderTable(['hottest functions (self time)', '>ms'], r.profile.topFunctions.slice(0, 8).map((f) => [f.fn, ms(f.ms)]));
  const procs = `iptables processes of one converged apply (${t.processes.length}): ${t.processes.join('; ')}`;
  return ['breakdown: where the time of a converged apply goes (nft)', wall, '', timeline, procs, '', imports, '', parse, '', profile, '', top].join('\n');
}
