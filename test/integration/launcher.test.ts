import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { CLI, COMMAND, REPO, ensureBuilt, freshHost, parseAudit, runCli } from '../helpers/cli.js';

/**
 * dist/imds-guard, the installed command (package.json's bin): the one-shot verbs start
 * from dist/cli.blob, a V8 start-up snapshot of the CLI (src/snapshot.ts), everything the
 * snapshot cannot serve from dist/cli.js. What it chose is read from `sh -x`, which prints
 * the exec line. The other integration tests run their one-shot verbs through it
 * (runCli), so every verb they check is checked from the snapshot; this file pins the
 * choices and that both ways answer alike, the environment read when the command runs,
 * not when the snapshot was built.
 */
before(() => ensureBuilt());

const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

/** The environment of the caller without what would change node's start (NODE_OPTIONS) or the config. */
function baseEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IMDS_GUARD_') && k !== 'NODE_OPTIONS' && !k.startsWith('NODE_TEST')));
  return { ...env, ...extra };
}

/** `sh -x COMMAND ARGS`: the result, and the node command line it exec'd. */
function traced(command: string, args: readonly string[], env: NodeJS.ProcessEnv): { code: number | null; stdout: string; stderr: string; exec: string } {
  const r = spawnSync('sh', ['-x', command, ...args], { env, encoding: 'utf8' });
  const exec = r.stderr.split('\n').filter((l) => /^\+ exec /.test(l)).at(-1) ?? '';
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, exec };
}

test('a one-shot verb starts from the snapshot; the agent (with its V8 setting), NODE_OPTIONS and a blob built by another node binary start dist/cli.js', (t) => {
  const blob = join(REPO, 'dist', 'cli.blob');
  const snap = traced(COMMAND, ['--version'], baseEnv());
  assert.equal(snap.code, 0, snap.stderr);
  assert.equal(snap.stdout, `${VERSION}\n`);
  assert.ok(snap.exec.includes(`--snapshot-blob ${blob} ${CLI} --version`), snap.exec);

  // The agent gets its 1 MB young generation on node's command line, unless NODE_OPTIONS sets one.
  for (const [what, args, env, node] of [
    ['the agent', ['run', '--help'], baseEnv(), `--max-semi-space-size=1 ${CLI}`],
    ['the agent, NODE_OPTIONS setting the young generation', ['run', '--help'], baseEnv({ NODE_OPTIONS: '--max-semi-space-size=4' }), `node ${CLI}`],
    ['the agent, NODE_OPTIONS setting something else', ['run', '--help'], baseEnv({ NODE_OPTIONS: '--max-old-space-size=200' }), `--max-semi-space-size=1 ${CLI}`],
    ['NODE_OPTIONS set', ['--version'], baseEnv({ NODE_OPTIONS: '--max-semi-space-size=1' }), `node ${CLI}`],
  ] as const) {
    const r = traced(COMMAND, args, env);
    assert.equal(r.code, 0, `${what}: ${r.stderr}`);
    assert.ok(!r.exec.includes('--snapshot-blob') && r.exec.endsWith(`${node} ${args.join(' ')}`), `${what}: ${r.exec}`);
  }

  // A copy of dist/ (as `npm pack` and an install make one, with other mtimes) uses the
  // blob; once cli.blob.node names another node binary (as after a node upgrade), not.
  const dir = mkdtempSync(join(tmpdir(), 'igt-launcher-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(REPO, 'dist'), join(dir, 'dist'), { recursive: true });
  cpSync(join(REPO, 'package.json'), join(dir, 'package.json'));
  const copied = traced(join(dir, 'dist', 'imds-guard'), ['--version'], baseEnv());
  assert.equal(copied.stdout, `${VERSION}\n`, copied.stderr);
  assert.ok(copied.exec.includes(`--snapshot-blob ${join(dir, 'dist', 'cli.blob')}`), `a copy uses its own blob: ${copied.exec}`);
  const [mtime, size] = readFileSync(join(dir, 'dist', 'cli.blob.node'), 'utf8').trim().split(':');
  writeFileSync(join(dir, 'dist', 'cli.blob.node'), `${Number(mtime) - 86_400}:${size}\n`);
  const stale = traced(join(dir, 'dist', 'imds-guard'), ['--version'], baseEnv());
  assert.equal(stale.code, 0, stale.stderr);
  assert.equal(stale.stdout, `${VERSION}\n`);
  assert.ok(!stale.exec.includes('--snapshot-blob') && stale.exec.endsWith(`${join(dir, 'dist', 'cli.js')} --version`), stale.exec);

  // Installed as a symlink (npm's bin link): dist/ is found through it.
  symlinkSync(COMMAND, join(dir, 'imds-guard'));
  const linked = traced(join(dir, 'imds-guard'), ['--version'], baseEnv());
  assert.equal(linked.stdout, `${VERSION}\n`, linked.stderr);
  assert.ok(linked.exec.includes(`--snapshot-blob ${blob} ${CLI} --version`), linked.exec);
});

test('from the snapshot and from dist/cli.js, the CLI answers alike, and reads the environment as it runs', (t) => {
  const run = (file: string, args: readonly string[], env: NodeJS.ProcessEnv = baseEnv()) => spawnSync(file, args, { env, encoding: 'utf8' });
  const both = (args: readonly string[], env?: NodeJS.ProcessEnv) => [run(COMMAND, args, env), run(process.execPath, [CLI, ...args], env)] as const;
  for (const args of [['--help'], ['apply', '--help'], ['audit', '--bogus'], ['check-config', '--endpoints', '169.254.169.254:99999']]) {
    const [snap, js] = both(args);
    assert.deepEqual({ code: snap.status, stdout: snap.stdout, stderr: snap.stderr }, { code: js.status, stdout: js.stdout, stderr: js.stderr }, args.join(' '));
  }
  // Configuration from the environment, as the command runs: a bad value is refused (exit 2), a good one used.
  const [bad] = both(['check-config'], baseEnv({ IMDS_GUARD_DRIFT_SCHEDULE: '61 * * * * *' }));
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /^imds-guard: .*driftSchedule "61 \* \* \* \* \*" is not a cron expression/m);

  const { ns, host } = freshHost(t, 'launcher');
  const fresh = runCli(ns, host, ['apply', ...host.args], { env: { IMDS_GUARD_ENDPOINTS: '169.254.170.2:80' } });
  assert.equal(fresh.code, 0, fresh.stdout + fresh.stderr);
  assert.match(fresh.stdout, /^imds-guard: protected \(\d+ transaction\(s\)\)$/m);
  const written = host.restores().length;
  const env = { ...host.env, IMDS_GUARD_ENDPOINTS: '169.254.170.2:80' };
  const viaSnapshot = ns.run(COMMAND, ['audit', '--format', 'json', ...host.args], { env, cwd: host.root });
  const viaJs = ns.run(process.execPath, [CLI, 'audit', '--format', 'json', ...host.args], { env, cwd: host.root });
  assert.equal(viaSnapshot.code, 0, viaSnapshot.stdout + viaSnapshot.stderr);
  const [a, b] = [parseAudit(viaSnapshot), parseAudit(viaJs)];
  assert.deepEqual(a.endpoints.list, ['169.254.170.2:80']);
  const timeless = (r: object): unknown => JSON.parse(JSON.stringify(r, (k, v: unknown) => (k === 'generatedAt' ? undefined : v)));
  assert.deepEqual(timeless(a), timeless(b));
  const again = [ns.run(COMMAND, ['apply', ...host.args], { env, cwd: host.root }), ns.run(process.execPath, [CLI, 'apply', ...host.args], { env, cwd: host.root })];
  for (const r of again) {
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^imds-guard: already protected; nothing written$/m);
  }
  assert.equal(again[0]!.stdout, again[1]!.stdout);
  assert.equal(host.restores().length, written, 'a converged apply writes nothing, from the snapshot or not');
});
