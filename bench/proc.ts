import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { type ProcOptions, type ProcResult, runProc } from '../test/helpers/proc.js';

/** A finished process, with the wall time the bench saw from spawn to its output closing. */
export interface Completed extends ProcResult {
  readonly ms: number;
  /** Spawn time on the wall clock (ms since the epoch, sub-ms precision), to line up with shim timestamps. */
  readonly startedAt: number;
}

export type SpawnOptions = ProcOptions;

/**
 * The tests' process runner with a stopwatch around it. It spawns the way imds-guard's
 * own runner does (pipes on all three streams, stdin ended at once, output read to the
 * end), so a baseline and an apply pay the same costs.
 */
export async function runTimed(file: string, args: readonly string[], opts: SpawnOptions = {}): Promise<Completed> {
  const t0 = performance.now();
  const r = await runProc(file, args, opts);
  return { ...r, ms: performance.now() - t0, startedAt: performance.timeOrigin + t0 };
}

/** Throws with the command's stderr unless it exited 0. */
export function mustSucceed(what: string, r: Completed): Completed {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr.trim().split('\n').slice(0, 5).join(' | ')}`);
  return r;
}

// Settings a developer's shell may carry that would change what the measured processes do.
// NODE_EXTRA_CA_CERTS makes every node process read and parse that CA bundle as it starts,
// before any JavaScript (85 ms a start on the machine the bench was written on, whose
// environment sets it to the system bundle; `node -e 0` takes 36 ms without it): a cost
// of that shell, not of imds-guard, which makes no TLS connection of its own, and absent
// from the agent's systemd, OpenRC and Swarm environments.
const STRIPPED = /^(IMDS_GUARD_|DOCKER_HOST$|DOCKER_CERT_PATH$|DOCKER_TLS_VERIFY$|NODE_OPTIONS$|NODE_DEBUG$|NODE_EXTRA_CA_CERTS$)/;

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

/**
 * CPU time (user + system, ms) of this process's children that have exited and been
 * reaped: /proc/self/stat cutime + cstime, in 10 ms ticks. nsenter execs what it runs,
 * so an iptables process started through it is our child. Long-lived children (the
 * warm pass process, an agent) count only once they exit, so deltas around one awaited
 * process measure that process.
 */
export function reapedCpuMs(): number {
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(f[13]) + Number(f[14])) * 10;
}

/** utime + stime + cutime + cstime of process `pid`, in ms (10 ms ticks): its CPU and that of its reaped children. */
export function processCpuMs(pid: number): { self: number; children: number } {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return { self: (Number(f[11]) + Number(f[12])) * 10, children: (Number(f[13]) + Number(f[14])) * 10 };
}

/** A `Field:  N kB` line of /proc/<pid>/status, in KiB (VmRSS, VmHWM, RssAnon, RssFile). */
export function procStatusKb(pid: number, field: string): number {
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN);
}
