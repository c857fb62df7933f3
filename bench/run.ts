import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { AGENT_PARTS, type AgentPart, agentModule } from './agent.js';
import { breakdownModule } from './breakdown.js';
import { runEngine } from './engine.js';
import { idleModule } from './idle.js';
import type { BenchArgs, BenchContext, BenchModule } from './module.js';
import { destroyAllNetns, removeStaleNetns } from './netns.js';
import type { Target } from './stats.js';
import { renderEngine, renderTargets } from './table.js';
import { tamperModule } from './tamper.js';

/**
 * `npm run bench [-- --only engine,idle] [--backends nft] [--runs 15] [--no-build]`; `--help` lists the options.
 * Prints tables on stdout and writes every figure to bench/results/latest.json. Exits
 * non-zero only when something failed to run; a missed target is reported, not fatal.
 */
const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = dirname(HERE);
const OUT = join(HERE, 'results', 'latest.json');

const engineModule: BenchModule = {
  name: 'engine',
  description: 'bare saves, the CLI, the in-agent pass, check-then-insert and the seed recipe in one loop, per backend, at each table size',
  async run(ctx) {
    const a = ctx.args;
    const result = await runEngine({ cli: ctx.cli, backends: a.backends, sizes: a.sizes, headline: a.rules, runs: a.runs, sizeRuns: a.sizeRuns, progress: ctx.progress });
    return { result, text: renderEngine(result), targets: result.backends.flatMap((b) => b.targets) };
  },
};

const HELP = `usage: npm run bench -- [options]   (as root; under the heavy-test lock on a shared machine)

  --only M1,M2          modules to run: engine, breakdown, idle, tamper, agent (default all)
  --backends nft,legacy backends of the engine loop (default both)
  --rules N             the headline table size, the one targets are judged on (default 10000)
  --sizes A,B,C         every table size of the engine loop (default 1000,10000,50000)
  --runs N              engine rounds at the headline size (default 15)
  --size-runs N         engine rounds at the other sizes (default 7)
  --tamper-runs N       tamper-to-repair samples per kind (default 20)
  --tamper-cap MS       a tamper not repaired within MS counts as "> cap" (default 3000)
  --agent-parts P1,P2   parts of the agent module: probes, race, memory (default all);
                        memory alone: idle RSS and the restores of 500 network events
  --no-build            measure dist/ as it is
  --out FILE            where the figures go (default bench/results/latest.json)
  --help                this text
`;

function parse(): { args: BenchArgs; only: string[] | null; build: boolean; out: string } | null {
  const { values } = parseArgs({
    options: {
      help: { type: 'boolean', default: false },
      'agent-parts': { type: 'string', default: AGENT_PARTS.join(',') },
      only: { type: 'string' },
      backends: { type: 'string', default: 'nft,legacy' },
      runs: { type: 'string', default: '15' },
      'size-runs': { type: 'string', default: '7' },
      rules: { type: 'string', default: '10000' },
      sizes: { type: 'string', default: '1000,10000,50000' },
      'tamper-runs': { type: 'string', default: '20' },
      'tamper-cap': { type: 'string', default: '3000' },
      'no-build': { type: 'boolean', default: false },
      out: { type: 'string', default: OUT },
    },
  });
  const int = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}`);
    return n;
  };
  if (values.help) return null;
  const backends = (values.backends ?? '').split(',').filter((b) => b !== '');
  const agentParts = (values['agent-parts'] ?? '').split(',').filter((p) => p !== '');
  for (const p of agentParts) if (!(AGENT_PARTS as readonly string[]).includes(p)) throw new Error(`--agent-parts: unknown part ${p} (parts: ${AGENT_PARTS.join(', ')})`);
  for (const b of backends) if (b !== 'nft' && b !== 'legacy') throw new Error(`--backends: unknown backend ${b}`);
  const rules = int('rules', values.rules, 1);
  const sizes = [...new Set([...(values.sizes ?? '').split(',').filter((x) => x !== '').map((x) => int('sizes', x, 1)), rules])].sort((a, b) => a - b);
  return {
    args: {
      backends: backends as BenchArgs['backends'],
      runs: int('runs', values.runs, 3),
      sizeRuns: int('size-runs', values['size-runs'], 3),
      rules,
      sizes,
      tamperRuns: int('tamper-runs', values['tamper-runs'], 1),
      tamperCapMs: int('tamper-cap', values['tamper-cap'], 100),
      agentParts: agentParts as AgentPart[],
    },
    only: values.only === undefined ? null : values.only.split(','),
    build: !values['no-build'],
    out: values.out ?? OUT,
  };
}

function git(args: string[]): string {
  return String(spawnSync('git', args, { cwd: REPO, encoding: 'utf8' }).stdout ?? '').trim();
}

function preflight(): void {
  if (process.getuid?.() !== 0) throw new Error('the bench needs root: it creates network namespaces (ip netns add) and runs iptables inside them');
  for (const bin of ['ip', 'nsenter']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) throw new Error(`${bin} not found`);
  }
}

/**
 * Builds dist/ with `npm run build` (type-check, then the esbuild bundle of
 * scripts/build.mjs); a bare `tsc -p tsconfig.json` would write unbundled modules over
 * it. A failed build is reported, and the dist/ already there is measured.
 */
function build(progress: (l: string) => void): { ok: boolean; output: string } {
  progress('build: npm run build');
  const r = spawnSync('npm', ['run', '--silent', 'build'], { cwd: REPO, encoding: 'utf8' });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  if (r.status !== 0) progress(`build: npm run build exited ${r.status}; measuring the dist/ already there:\n${output.split('\n').slice(0, 10).join('\n')}`);
  return { ok: r.status === 0, output };
}

async function main(): Promise<number> {
  const progress = (line: string): void => void process.stderr.write(`bench: ${line}\n`);
  const parsed = parse();
  if (parsed === null) {
    process.stdout.write(HELP);
    return 0;
  }
  const { args, only, build: doBuild, out } = parsed;
  preflight();
  const stale = removeStaleNetns();
  if (stale.length > 0) progress(`deleted namespaces left by killed runs: ${stale.join(', ')}`);
  const built = doBuild ? build(progress) : null;
  const cli = join(REPO, 'dist', 'cli.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build with npm run build`);

  const available: BenchModule[] = [engineModule, breakdownModule, idleModule, tamperModule, agentModule];
  for (const name of only ?? []) if (!available.some((m) => m.name === name)) throw new Error(`--only: no module ${name} (available: ${available.map((m) => m.name).join(', ')})`);
  const selected = available.filter((m) => only === null || only.includes(m.name));

  const ctx: BenchContext = { cli, repo: REPO, args, progress };
  const started = new Date();
  const results: Record<string, unknown> = {};
  const errors: { module: string; error: string }[] = [];
  const targets: Target[] = [];
  const texts: string[] = [];
  try {
    for (const m of selected) {
      const t0 = Date.now();
      progress(`${m.name}: ${m.description}`);
      try {
        const o = await m.run(ctx);
        results[m.name] = o.result;
        targets.push(...o.targets);
        texts.push(o.text);
        progress(`${m.name}: done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      } catch (e) {
        const error = e instanceof Error ? (e.stack ?? e.message) : String(e);
        errors.push({ module: m.name, error });
        texts.push(`${m.name}: FAILED TO RUN: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  } finally {
    destroyAllNetns();
  }

  const doc = {
    generatedAt: started.toISOString(),
    durationSeconds: Math.round((Date.now() - started.getTime()) / 1000),
    git: { commit: git(['rev-parse', 'HEAD']), dirtyFiles: git(['status', '--porcelain']).split('\n').filter((l) => l !== '').length },
    host: { node: process.version, kernel: release(), cpus: cpus().length, loadavgAtEnd: loadavg() },
    args,
    modules: selected.map((m) => m.name),
    build: built,
    results,
    targets,
    errors,
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(doc, null, 2)}\n`);

  process.stdout.write(`${texts.join('\n\n')}\n\n`);
  if (targets.length > 0) process.stdout.write(`${renderTargets(targets)}\n\n`);
  process.stdout.write(`figures: ${out} (${doc.durationSeconds} s, node ${process.version}, ${cpus().length} CPUs, load ${loadavg().map((l) => l.toFixed(2)).join(' ')})\n`);
  for (const e of errors) process.stderr.write(`bench: ${e.module} failed:\n${e.error}\n`);
  return errors.length > 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    destroyAllNetns();
    process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 2;
  },
);
