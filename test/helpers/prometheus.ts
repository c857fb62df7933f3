import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { runProc } from './proc.js';

/**
 * Debian's `prometheus` package (promtool and the server) for the tests that check what
 * deploy/prometheus ships. scripts/install-deps installs it for the test profile; a
 * Prometheus started here listens on 127.0.0.1 only, keeps its TSDB in a temp directory,
 * and is stopped by its pid.
 */
export const TOOLS = ['promtool', 'prometheus'] as const;

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d !== '' && existsSync(join(d, bin)));
}

/**
 * The `skip` option for tests that need promtool and prometheus: a reason when one is
 * missing here, but never in CI (CI=true), where install-deps put them in place and a
 * missing one must fail the test (see `requireTools`).
 */
export function promToolsSkip(): string | false {
  const missing = TOOLS.filter((t) => !onPath(t));
  if (missing.length === 0 || process.env.CI === 'true') return false;
  return `${missing.join(' and ')} not installed (bash scripts/install-deps test installs Debian's prometheus)`;
}

/** Throws (fails the test) when a tool is missing: in CI the test runs and must not pass without them. */
export function requireTools(): void {
  const missing = TOOLS.filter((t) => !onPath(t));
  if (missing.length > 0) throw new Error(`${missing.join(' and ')} not installed: run bash scripts/install-deps test`);
}

/** `promtool ARGS` with `input` on stdin. */
export function promtool(args: readonly string[], opts: { input?: string; cwd?: string } = {}): { code: number; out: string } {
  const r = spawnSync('promtool', args, { input: opts.input ?? '', cwd: opts.cwd, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { code: r.status ?? 128, out: `${r.stdout}${r.stderr}` };
}

/** A free TCP port on 127.0.0.1, for a server that cannot be told to pick its own (Prometheus cannot report one). */
export async function freeLoopbackPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

// One GET from inside a network namespace: a lab namespace has no route to this one, so
// its 127.0.0.1 is reached by a short node process started there. Prints JSON {status, body}.
const NETNS_GET = 'fetch(process.argv[1]).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() }))).catch((e) => { process.stderr.write(String(e)); process.exit(1); })';

/**
 * GET `url` (a 127.0.0.1 one) from this process, or with `netns` from inside
 * /run/netns/NETNS. A connection that fails is a rejection, as with fetch.
 */
export async function httpGet(url: string, netns?: string): Promise<{ status: number; body: string }> {
  if (netns === undefined) {
    const r = await fetch(url);
    return { status: r.status, body: await r.text() };
  }
  const env: NodeJS.ProcessEnv = {};
  // The test runner's settings would make the child a test process of its own.
  for (const [k, v] of Object.entries(process.env)) if (!/^(NODE_OPTIONS$|NODE_TEST)/.test(k)) env[k] = v;
  const r = await runProc('nsenter', [`--net=/run/netns/${netns}`, process.execPath, '-e', NETNS_GET, url], { env, timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`GET ${url} in ${netns} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as { status: number; body: string };
}

export interface PrometheusOptions {
  /** Run it inside /run/netns/NETNS (via nsenter, which execs it: the pid stays Prometheus'), to scrape targets on that namespace's loopback. */
  readonly netns?: string;
  /** Its port on 127.0.0.1 (default: a free one here; 9090 in a namespace, where nothing else listens). */
  readonly port?: number;
}

export interface RunningPrometheus {
  readonly url: string;
  /** An instant query; returns the result vector. */
  query(q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  /** GET /api/v1/ENDPOINT and return `data`. */
  api<T>(endpoint: string): Promise<T>;
  /** The server's log so far, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

// Servers this process started and has not stopped: killed (by pid) if it exits first,
// so no Prometheus outlives its test run (nor keeps a lab namespace alive).
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Starts `prometheus` with `config` (written as YAML) on a loopback port; resolves once it is ready. */
export async function startPrometheus(config: unknown, opts: PrometheusOptions = {}): Promise<RunningPrometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'imdsg-prom-'));
  const file = join(dir, 'prometheus.yml');
  writeFileSync(file, stringify(config));
  const port = opts.port ?? (opts.netns === undefined ? await freeLoopbackPort() : 9090);
  const url = `http://127.0.0.1:${port}`;
  const args = [`--config.file=${file}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'];
  const child: ChildProcess =
    opts.netns === undefined ? spawn('prometheus', args, { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn('nsenter', [`--net=/run/netns/${opts.netns}`, 'prometheus', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let log = '';
  child.stdout?.on('data', (b: Buffer) => (log += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (log += b.toString()));
  const exited = new Promise<void>((resolve) =>
    child.once('close', () => {
      running.delete(child);
      resolve();
    }),
  );
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const api = async <T>(endpoint: string): Promise<T> => {
    const r = await httpGet(`${url}/api/v1/${endpoint}`, opts.netns);
    const body = JSON.parse(r.body) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${endpoint}: ${body.error ?? r.status}`);
    return body.data;
  };
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`prometheus exited ${child.exitCode}:\n${log}`);
      const ready = await httpGet(`${url}/-/ready`, opts.netns).then((r) => r.status === 200).catch(() => false);
      if (ready) break;
      if (Date.now() > deadline) throw new Error(`prometheus not ready after 30 s:\n${log}`);
      await sleep(200);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    url,
    api,
    query: (q) => api<{ result: { metric: Record<string, string>; value: [number, string] }[] }>(`query?query=${encodeURIComponent(q)}`).then((d) => d.result),
    log: () => log,
    stop,
  };
}
