import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';

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

/** Starts `prometheus` with `config` (written as YAML) on a free loopback port; resolves once it is ready. */
export async function startPrometheus(config: unknown): Promise<RunningPrometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'imdsg-prom-'));
  const file = join(dir, 'prometheus.yml');
  writeFileSync(file, stringify(config));
  const port = await freeLoopbackPort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn('prometheus', [`--config.file=${file}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout?.on('data', (b: Buffer) => (log += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (log += b.toString()));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
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
    const r = await fetch(`${url}/api/v1/${endpoint}`);
    const body = (await r.json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${endpoint}: ${body.error ?? r.status}`);
    return body.data;
  };
  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`prometheus exited ${child.exitCode}:\n${log}`);
      const ready = await fetch(`${url}/-/ready`).then((r) => r.ok).catch(() => false);
      if (ready) break;
      if (i > 150) throw new Error(`prometheus not ready after 30 s:\n${log}`);
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
