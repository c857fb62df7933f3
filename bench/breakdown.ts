import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { type CpuProfile, type ProfileSummary, averageSummaries, sourceMapLocator, summarizeProfile } from './cpu-profile.js';
import type { BenchContext, BenchModule } from './module.js';
import { FAMILIES, type NatLab, openNatLab } from './nat-lab.js';
import { cleanEnv, mustSucceed, removeTempDir, runTimed, tempDir } from './proc.js';
import { createShims } from './shims.js';
import { type Stat, median, round, stat } from './stats.js';
import { ms, renderTable } from './table.js';

/**
 * Where a no-op `apply` spends its time, on the nft backend's 10,000-rule table: node's
 * own start-up, loading the CLI's bundle, the two saves, and what runs after them
 * (parse, plan, print, exit). Four views that should agree: interleaved wall times of
 * partial programs, a timeline from shim timestamps, the load time of each chunk apply
 * imports, in a fresh node, and V8 CPU profiles mapped back to src/. And two what-ifs: a
 * floor (node plus the two saves and nothing else) and a pass in a warm process.
 *
 * dist/ is an esbuild bundle (scripts/build.mjs): dist/cli.js, plus a chunk per module
 * the CLI imports lazily, named after it (`import('./app/settings.js')` became
 * `import("./chunks/settings-HASH.js")`). Those chunks are what apply loads, so the
 * import and warm-pass figures use them; a module the bundle does not expose on its own
 * (core/nat-table) is bundled here with esbuild's API into the run's temp dir.
 */
const NOOP_ARGS = ['apply', '--no-docker', '--boot-script', 'never'];
const DETAIL_RUNS = 3;
// Breakdown rounds are capped: six commands a round, and the engine already has the headline ratio.
const MAX_WALL_ROUNDS = 9;
const WARM_PASSES = 10;

// The least any Node implementation of a no-op apply can cost: start node, run the two
// saves the way imds-guard does (spawned together, output read to the end), exit.
const FLOOR_SCRIPT = `const { spawn } = require('node:child_process');
const save = (f) => new Promise((ok, fail) => { const c = spawn(f, ['-t', 'nat']); const out = []; c.stdout.on('data', (b) => out.push(b)); c.on('error', fail); c.on('close', () => ok(Buffer.concat(out).toString('utf8'))); });
Promise.all([save('iptables-nft-save'), save('ip6tables-nft-save')]).then((t) => { if (!t[0].includes('*nat')) process.exit(1); });`;

interface Command {
  readonly label: string;
  readonly file: string;
  readonly args: readonly string[];
}

export interface BreakdownResult {
  readonly backend: 'nft';
  readonly wall: readonly { readonly label: string; readonly stat: Stat; readonly ratioToSave: number }[];
  readonly timeline: { readonly beforeFirstSave: number; readonly saves: number; readonly afterSaves: number; readonly total: number; readonly runs: number };
  readonly imports: readonly { readonly step: string; readonly ms: number }[];
  readonly parse: { readonly moduleLoad: number; readonly parseNatTable: number; readonly chainRules: number } | { readonly skipped: string };
  readonly profile: ProfileSummary;
  /** No-op passes inside one warm node process (what the agent's drift check costs), or why not measured. */
  readonly warmPass: { readonly stat: Stat; readonly ratioToSave: number } | { readonly skipped: string };
}

export const breakdownModule: BenchModule = {
  name: 'breakdown',
  description: "where a no-op apply's time goes (nft backend, converged 10,000-rule table)",
  async run(ctx) {
    const result = await runBreakdown(ctx);
    return { result, text: renderBreakdown(result), targets: [] };
  },
};

async function runBreakdown(ctx: BenchContext): Promise<BreakdownResult> {
  const lab = await openNatLab('nft', ctx.args.rules);
  const tmp = tempDir('breakdown');
  try {
    const env = cleanEnv();
    mustSucceed('converging apply', await lab.ns.run(process.execPath, [ctx.cli, ...NOOP_ARGS], { env }));
    const commands: Command[] = [
      { label: 'bare iptables-nft-save -t nat (IPv4) = baseline', file: 'iptables-nft-save', args: ['-t', 'nat'] },
      { label: 'node -e 0 (an empty node: start-up + exit)', file: process.execPath, args: ['-e', '0'] },
      { label: 'node dist/cli.js --version (the entry and its static chunks)', file: process.execPath, args: [ctx.cli, '--version'] },
      { label: 'no-op apply --no-docker --boot-script never', file: process.execPath, args: [ctx.cli, ...NOOP_ARGS] },
      { label: 'floor: node -e that only runs both saves in parallel and reads them', file: process.execPath, args: ['-e', FLOOR_SCRIPT] },
    ];
    ctx.progress(`breakdown: ${Math.min(ctx.args.runs, MAX_WALL_ROUNDS)} interleaved rounds of ${commands.length} commands`);
    const wall = await timeCommands(lab, env, commands, Math.min(ctx.args.runs, MAX_WALL_ROUNDS));
    ctx.progress('breakdown: timeline, imports, parse, cpu profiles');
    const timeline = await timelineOf(lab, ctx);
    const imports = await importSteps(ctx);
    const parse = await coldParse(lab, ctx, tmp);
    const profile = await profileRuns(lab, ctx, tmp);
    const warmPass = await warmPasses(lab, ctx, wall[0]?.stat.median ?? Number.NaN);
    return { backend: 'nft', wall, timeline, imports, parse, profile, warmPass };
  } finally {
    lab.destroy();
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

/** Phases of a converged apply, from the shims' timestamps of the saves it starts. */
async function timelineOf(lab: NatLab, ctx: BenchContext): Promise<BreakdownResult['timeline']> {
  const shims = createShims();
  try {
    const phases = { before: [] as number[], saves: [] as number[], after: [] as number[], total: [] as number[] };
    for (let i = 0; i < DETAIL_RUNS; i++) {
      shims.clear();
      const r = mustSucceed('apply (timeline)', await lab.ns.run(process.execPath, [ctx.cli, ...NOOP_ARGS], { env: cleanEnv({ PATH: shims.path }) }));
      const saves = shims.read().filter((c) => c.kind === 'save');
      if (saves.length === 0) throw new Error('the no-op apply ran no iptables-save through the shims');
      const first = Math.min(...saves.map((c) => c.startMs));
      const last = Math.max(...saves.map((c) => c.endMs));
      phases.before.push(first - r.startedAt);
      phases.saves.push(last - first);
      phases.after.push(r.startedAt + r.ms - last);
      phases.total.push(r.ms);
    }
    return { beforeFirstSave: round(median(phases.before)), saves: round(median(phases.saves)), afterSaves: round(median(phases.after)), total: round(median(phases.total)), runs: DETAIL_RUNS };
  } finally {
    shims.remove();
  }
}

/** The modules src/cli.ts's apply action imports lazily, in its order, and what each brings. */
const APPLY_IMPORTS: readonly (readonly [module: string, brings: string])[] = [
  ['app/settings', 'config file, layers'],
  ['shell/logger', 'pino and its dependencies'],
  ['app/wiring', 'shell adapters; dockerode stays lazy'],
  ['app/reconcile', 'observe, parse, desired, plan, payload'],
  ['core/findings', ''],
  ['app/summary', 'the printed summary'],
];

/**
 * The chunk dist/cli.js imports in place of one of src/cli.ts's lazy imports: build.mjs
 * names chunks `chunks/[name]-[hash]`, and a lazily imported module's chunk takes the
 * module's name. Taken from cli.js itself, so it is the chunk this build loads.
 */
function lazyChunk(ctx: BenchContext, module: string): string {
  const name = module.slice(module.lastIndexOf('/') + 1); // src/ file names: letters and '-'
  const imports = new RegExp(`import\\("\\./(chunks/${name}-[A-Za-z0-9]+\\.js)"\\)`, 'g');
  const found = [...new Set(Array.from(readFileSync(ctx.cli, 'utf8').matchAll(imports), (m) => m[1]))];
  if (found.length !== 1 || found[0] === undefined) {
    throw new Error(`dist/cli.js imports ${found.length} chunks named ${name}-*.js, expected one (for src/${module}.ts): has scripts/build.mjs changed how it names chunks?`);
  }
  return join(ctx.cli, '..', found[0]);
}

/** The chunks apply loads, in its order, each timed in one fresh node (outside the netns: no iptables runs). */
async function importSteps(ctx: BenchContext): Promise<BreakdownResult['imports']> {
  const steps: [string, string][] = [
    ['dist/cli.js + static chunks (commander, zod, config, errors), running --version', pathToFileURL(ctx.cli).href],
    ...APPLY_IMPORTS.map(([module, brings]): [string, string] => {
      const chunk = lazyChunk(ctx, module);
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
 * parseNatTable on the converged IPv4 save, cold (a fresh node per run, as in an apply).
 * In dist/ the parser has no chunk of its own (it shares one with the rest of
 * reconcile), so core/nat-table is bundled alone here, with the output options of
 * scripts/build.mjs.
 */
async function coldParse(lab: NatLab, ctx: BenchContext, tmp: string): Promise<BreakdownResult['parse']> {
  const module = join(tmp, 'nat-table.mjs');
  await build({
    entryPoints: [join(ctx.repo, 'src', 'core', 'nat-table.ts')],
    outfile: module,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    minifyWhitespace: true,
    minifySyntax: true,
    logLevel: 'error',
  });
  const saveFile = join(tmp, 'nat4.save');
  writeFileSync(saveFile, mustSucceed('save', await lab.save('ipv4')).stdout);
  const script = `import { readFileSync } from 'node:fs';
const text = readFileSync(${JSON.stringify(saveFile)}, 'utf8');
let t = performance.now();
const m = await import(${JSON.stringify(pathToFileURL(module).href)});
const moduleLoad = performance.now() - t;
if (typeof m.parseNatTable !== 'function') { process.stdout.write('null'); process.exit(0); }
t = performance.now();
const table = m.parseNatTable(text);
const parseNatTable = performance.now() - t;
t = performance.now();
if (typeof m.chainRules === 'function') for (const c of ['PREROUTING', 'IMDS-GUARD']) m.chainRules(table, c);
const chainRules = performance.now() - t;
process.stdout.write(JSON.stringify({ moduleLoad, parseNatTable, chainRules }));`;
  const runs: { moduleLoad: number; parseNatTable: number; chainRules: number }[] = [];
  for (let i = 0; i < DETAIL_RUNS; i++) {
    const r = mustSucceed('cold parse', await runTimed(process.execPath, ['--input-type=module', '-e', script], { env: cleanEnv() }));
    const v = JSON.parse(r.stdout) as (typeof runs)[number] | null;
    if (v === null) return { skipped: 'src/core/nat-table.ts no longer exports parseNatTable' };
    runs.push(v);
  }
  const m = (k: keyof (typeof runs)[number]): number => round(median(runs.map((r) => r[k])));
  return { moduleLoad: m('moduleLoad'), parseNatTable: m('parseNatTable'), chainRules: m('chainRules') };
}

async function profileRuns(lab: NatLab, ctx: BenchContext, tmp: string): Promise<ProfileSummary> {
  const locate = sourceMapLocator();
  const summaries: ProfileSummary[] = [];
  for (let i = 0; i < DETAIL_RUNS; i++) {
    const dir = join(tmp, `prof-${i}`);
    mkdirSync(dir);
    mustSucceed('apply --cpu-prof', await lab.ns.run(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, ctx.cli, ...NOOP_ARGS], { env: cleanEnv() }));
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) throw new Error('node --cpu-prof wrote no profile');
    summaries.push(summarizeProfile(JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile, locate));
  }
  return averageSummaries(summaries);
}

/**
 * Reconcile passes in one node process, through the chunks the CLI loads for them
 * (settings, logger, wiring, reconcile): start-up paid once, as in the agent. Skipped,
 * not failed, when those modules changed shape: this is a what-if, not the product's
 * interface.
 */
async function warmPasses(lab: NatLab, ctx: BenchContext, baseline: number): Promise<BreakdownResult['warmPass']> {
  const url = (module: string): string => pathToFileURL(lazyChunk(ctx, module)).href;
  const script = `const { loadConfig } = await import(${JSON.stringify(url('app/settings'))});
const { createLogger } = await import(${JSON.stringify(url('shell/logger'))});
const { realPorts } = await import(${JSON.stringify(url('app/wiring'))});
const { reconcile } = await import(${JSON.stringify(url('app/reconcile'))});
const config = await loadConfig(undefined, { docker: false, bootScript: 'never' }, {});
const ports = await realPorts(config, await createLogger('warn', 2));
const times = [];
for (let i = 0; i < ${WARM_PASSES + 2}; i++) {
  const t = performance.now();
  const r = await reconcile(config, ports);
  times.push(performance.now() - t);
  if (!r.converged) { process.stdout.write(JSON.stringify({ skipped: 'a pass was not converged' })); process.exit(0); }
}
process.stdout.write(JSON.stringify({ times: times.slice(2) }));`;
  const r = await lab.ns.run(process.execPath, ['--input-type=module', '-e', script], { env: cleanEnv() });
  if (r.code !== 0) return { skipped: `the app modules did not run as expected: ${r.stderr.trim().split('\n')[0] ?? ''}` };
  const v = JSON.parse(r.stdout) as { times: number[] } | { skipped: string };
  if ('skipped' in v) return v;
  return { stat: stat(v.times), ratioToSave: round(median(v.times) / baseline, 2) };
}

export function renderBreakdown(r: BreakdownResult): string {
  const apply = r.wall.find((w) => w.label.startsWith('no-op apply'))?.stat.median ?? Number.NaN;
  const share = (x: number): string => `${Math.round((100 * x) / apply)}%`;
  const wall = renderTable(
    ['command (nft, converged table)', '>median ms', '>ratio to save', '>share of apply'],
    r.wall.map((w) => [w.label, ms(w.stat.median), `${w.ratioToSave.toFixed(2)}x`, share(w.stat.median)]),
  );
  const t = r.timeline;
  const timeline = renderTable(
    [`timeline of a no-op apply (shim timestamps, median of ${t.runs})`, '>ms', '>share'],
    [
      ['spawn -> first save starts (node start-up, module loading, config)', ms(t.beforeFirstSave), `${Math.round((100 * t.beforeFirstSave) / t.total)}%`],
      [`first save starts -> last save ends (${FAMILIES.join(' and ')} together)`, ms(t.saves), `${Math.round((100 * t.saves) / t.total)}%`],
      ['last save ends -> exit (parse, plan, print, exit)', ms(t.afterSaves), `${Math.round((100 * t.afterSaves) / t.total)}%`],
      ['total (with shims: a shell and two `date` per save)', ms(t.total), ''],
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
      : `cold parse of the converged IPv4 save: load src/core/nat-table bundled alone ${ms(r.parse.moduleLoad)} ms, parseNatTable ${ms(r.parse.parseNatTable)} ms, chainRules(PREROUTING, IMDS-GUARD) ${ms(r.parse.chainRules)} ms`;
  const groups = Object.entries(r.profile.groups).sort((a, b) => b[1] - a[1]);
  const profile = renderTable(
    [`cpu profile of a no-op apply, self time by origin via dist/'s sourcemaps (mean of ${t.runs}; profiler starts after node's bootstrap, ${ms(r.profile.durationMs)} ms profiled)`, '>ms'],
    groups.filter(([, v]) => v >= 0.5).map(([g, v]) => [g, ms(v)]),
  );
  const top = renderTable(['hottest functions (self time)', '>ms'], r.profile.topFunctions.slice(0, 8).map((f) => [f.fn, ms(f.ms)]));
  const warm =
    'skipped' in r.warmPass
      ? `warm pass: skipped (${r.warmPass.skipped})`
      : `what-if: a no-op pass inside one warm node process (the agent's drift check), median of ${r.warmPass.stat.samples.length}: ${ms(r.warmPass.stat.median)} ms = ${r.warmPass.ratioToSave.toFixed(2)}x the bare save`;
  return ['breakdown: where the time of a no-op apply goes', wall, '', warm, '', timeline, '', imports, '', parse, '', profile, '', top].join('\n');
}
