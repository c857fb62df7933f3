import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type Capability, MissingCapabilityError, capability } from '../helpers/capability.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: readonly string[], timeoutMs = 60_000): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error ? String(r.error) : '') };
}

export function commandExists(name: string): boolean {
  return run('sh', ['-c', 'command -v "$0"', name]).status === 0;
}

/**
 * The agent the service tests run: IMDS_GUARD_BIN (a package's dist/cli.js, or any
 * executable), else this checkout's built dist/cli.js; null when neither is there.
 * A directory means a package (package.json and dist/, which is self-contained).
 * There is no stand-in: a service test proves the unit runs the real agent.
 */
export function agentUnderTest(): { path: string; label: string } | null {
  const packageOf = (cli: string): string | null => {
    const pkg = resolve(dirname(cli), '..');
    return basename(dirname(cli)) === 'dist' && existsSync(join(pkg, 'package.json')) ? pkg : null;
  };
  const bin = process.env.IMDS_GUARD_BIN;
  if (bin !== undefined && bin !== '') {
    const cli = realpathSync(bin);
    return { path: packageOf(cli) ?? cli, label: `IMDS_GUARD_BIN=${bin}` };
  }
  const built = join(REPO, 'dist/cli.js');
  if (existsSync(built) && packageOf(built) !== null) return { path: REPO, label: 'the built dist/cli.js' };
  return null;
}

/** The agent as a capability: in CI (install-deps builds it) a missing one fails the test. */
export const BUILT_AGENT: Capability = capability('a built agent', agentUnderTest() !== null, 'no dist/cli.js (npm run build) and no IMDS_GUARD_BIN');

/** The agent, or a failure naming what is missing (call after requireCapabilities(BUILT_AGENT)). */
export function theAgent(): { path: string; label: string } {
  const a = agentUnderTest();
  if (a === null) throw new MissingCapabilityError(BUILT_AGENT);
  return a;
}

/** Root, for namespaces, chroot, debootstrap and mounts. */
export const ROOT: Capability = capability('root', process.getuid?.() === 0, 'needs root (namespaces, chroot, debootstrap)');

/** The commands, each as a capability ("X is not installed"). */
export function commands(...names: readonly string[]): Capability[] {
  return names.map((n) => capability(n, commandExists(n), `${n} is not installed (bash scripts/install-deps test)`));
}

/**
 * An init system booted as PID 1 of throwaway namespaces by one of the *-ns.sh
 * scripts: its PID 1 as seen from this machine, its console, and a way to run
 * commands inside (its namespaces and its root, a clean environment).
 */
export class BootedSystem {
  console = '';
  private readonly exited: Promise<number | null>;

  private constructor(
    private readonly proc: ChildProcess,
    readonly hostPid: number,
    readonly work: string,
  ) {
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  }

  /**
   * Runs `cmd args… SCRIPT BASE WORK AGENT [extra…]` and waits for the script's "ready PID"
   * line. WORK is new, or `opts.work` to boot again what an earlier system left there.
   */
  static async boot(cmd: string, args: readonly string[], script: string, base: string, agent: string, opts: { work?: string; extra?: readonly string[] } = {}): Promise<BootedSystem> {
    const work = opts.work ?? mkdtempSync(join(tmpdir(), 'imds-guard-boot-'));
    const proc = spawn(cmd, [...args, 'sh', join(REPO, 'test/packaging', script), base, work, agent, ...(opts.extra ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let sys: BootedSystem | undefined;
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (sys !== undefined) sys.console = out;
    };
    proc.stdout?.on('data', onData);
    proc.stderr?.on('data', onData);
    const hostPid = await new Promise<number>((resolve, reject) => {
      const poll = setInterval(() => {
        const m = /^ready (\d+)$/m.exec(out);
        if (m?.[1] !== undefined) {
          clearInterval(poll);
          resolve(Number(m[1]));
        }
      }, 50);
      proc.once('exit', (code) => {
        clearInterval(poll);
        reject(new Error(`${script} exited ${code} before booting:\n${out}`));
      });
    });
    // Everything later enters and finally SIGKILLs this pid: it must be the namespace's
    // init that unshare forked, never this machine's PID 1 or a stranger.
    const ppid = hostPid > 1 ? /^\d+ \(.*\) \S+ (\d+)/.exec(readFileSync(`/proc/${hostPid}/stat`, 'utf8'))?.[1] : undefined;
    if (ppid === undefined || Number(ppid) !== proc.pid) {
      proc.kill('SIGKILL');
      throw new Error(`${script} reported pid ${hostPid}, which is not the child of unshare (pid ${proc.pid})`);
    }
    sys = new BootedSystem(proc, hostPid, work);
    sys.console = out;
    return sys;
  }

  sh(command: string, timeoutMs = 60_000): RunResult {
    return run('nsenter', ['-t', String(this.hostPid), '--all', '--root', '--wd', '--', '/usr/bin/env', '-i', `PATH=${INNER_PATH}`, 'TERM=dumb', '/bin/sh', '-c', command], timeoutMs);
  }

  async waitFor(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; console:\n${this.console}`);
      await sleep(250);
    }
  }

  /** Runs the system's own poweroff command; resolves when PID 1 is gone, or 'timeout'. */
  async powerOff(command: string, timeoutMs: number): Promise<number | null | 'timeout'> {
    this.sh(command);
    return Promise.race([this.exited, sleep(timeoutMs).then(() => 'timeout' as const)]);
  }

  /** Whatever happened before: nothing of this system may outlive the test. `keepWork`: its files stay, for another boot. */
  async destroy(opts: { keepWork?: boolean } = {}): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      try {
        process.kill(this.hostPid, 'SIGKILL'); // PID 1 of the pid namespace: every process in it goes too
      } catch {
        // already gone
      }
      await Promise.race([this.exited, sleep(10_000)]);
    }
    if (opts.keepWork !== true) rmSync(this.work, { recursive: true, force: true });
  }
}

const INNER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Builds (once; cached) the root the boot tests use and returns its directory. */
export function buildTestRoot(): string {
  const r = run(join(REPO, 'scripts/openrc-rootfs'), ['build'], 15 * 60_000);
  if (r.status !== 0) throw new Error(`scripts/openrc-rootfs build failed:\n${r.stderr}`);
  return r.stdout.trim();
}
