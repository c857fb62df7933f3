import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

/** A finished process, with the wall time the bench saw from spawn to its output closing. */
export interface Completed {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
  /** Spawn time on the wall clock (ms since the epoch, sub-ms precision), to line up with shim timestamps. */
  readonly startedAt: number;
}

export interface SpawnOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly input?: string;
  readonly cwd?: string;
  readonly timeoutMs?: number;
}

/**
 * Runs a process the way imds-guard's own runner does (pipes on all three streams, stdin
 * ended at once, output read to the end), so a baseline and an apply pay the same costs.
 */
export function runTimed(file: string, args: readonly string[], opts: SpawnOptions = {}): Promise<Completed> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 120_000 });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.stdin.on('error', () => {});
    child.on('close', (code, signal) => {
      const ms = performance.now() - t0;
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms, startedAt: performance.timeOrigin + t0 });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Throws with the command's stderr unless it exited 0. */
export function mustSucceed(what: string, r: Completed): Completed {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr.trim().split('\n').slice(0, 5).join(' | ')}`);
  return r;
}

// Settings a developer's shell may carry that would change what the measured processes do.
const STRIPPED = /^(IMDS_GUARD_|DOCKER_HOST$|DOCKER_CERT_PATH$|DOCKER_TLS_VERIFY$|NODE_OPTIONS$|NODE_DEBUG$)/;

/** The environment measured processes run with: the bench's own, minus imds-guard/Docker/Node settings. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!STRIPPED.test(k)) env[k] = v;
  return { ...env, ...extra };
}

const tempDirs = new Set<string>();

/** A fresh directory under the system temp dir, removed at exit (signals included) if not before. */
export function tempDir(prefix: string): string {
  if (tempDirs.size === 0) process.once('exit', () => tempDirs.forEach(removeTempDir));
  const dir = mkdtempSync(join(tmpdir(), `igbench-${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}
