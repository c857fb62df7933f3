import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DEPLOYED_NODE_OPTIONS } from './agent-pass.js';
import type { BenchNetns } from './netns.js';
import { cleanEnv, procStatusKb, processCpuMs } from './proc.js';

/**
 * The real agent (`node dist/cli.js run --no-docker ...`) in one of the bench's
 * namespaces, started as every deployment form starts it (NODE_OPTIONS of the systemd
 * unit), its JSON log parsed as it arrives. nsenter execs node, so the child's pid is the
 * agent's: /proc/<pid> is the agent's own CPU and memory, its reaped iptables processes
 * included in cutime/cstime.
 */
export interface LogLine {
  readonly event?: string;
  readonly msg?: string;
  readonly time?: number | string;
  readonly [key: string]: unknown;
}

export interface NetnsAgent {
  readonly pid: number;
  lines(): readonly LogLine[];
  mark(): number;
  /** The first line from `from` on that `match` accepts; rejects after `timeoutMs` or when the agent exits. */
  waitFor(what: string, match: (l: LogLine) => boolean, opts?: { from?: number; timeoutMs?: number }): Promise<LogLine>;
  /** The agent's CPU, and that of the processes it ran and reaped, ms (10 ms ticks). */
  cpuMs(): { self: number; children: number };
  /** VmRSS and VmHWM, KiB. */
  memoryKb(): { rss: number; peak: number };
  signal(sig: NodeJS.Signals): void;
  stop(): Promise<void>;
}

export interface NetnsAgentOptions {
  readonly cli: string;
  readonly ns: BenchNetns;
  /** Directory for the state file. */
  readonly dir: string;
  readonly cgroupParent: string;
  /** Cron expression of the drift check; the agent's default (every 30 s) when absent. */
  readonly driftSchedule?: string;
  readonly extraArgs?: readonly string[];
}

export async function startNetnsAgent(o: NetnsAgentOptions): Promise<NetnsAgent> {
  const stateDir = join(o.dir, 'state');
  mkdirSync(stateDir, { recursive: true });
  const args = ['run', '--no-docker', '--boot-script', 'never', '--cgroup-parent', o.cgroupParent, '--state-dir', stateDir, ...(o.driftSchedule === undefined ? [] : ['--drift-schedule', o.driftSchedule]), '--log-level', 'debug', ...(o.extraArgs ?? [])];
  const child = spawn('nsenter', [`--net=${o.ns.path}`, process.execPath, o.cli, ...args], { env: cleanEnv({ NODE_OPTIONS: DEPLOYED_NODE_OPTIONS }), stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not start the agent');
  const lines: LogLine[] = [];
  const stderr: string[] = [];
  const waiters = new Set<() => void>();
  let exited = false;
  let partial = '';
  child.stdout.on('data', (b: Buffer) => {
    partial += b.toString('utf8');
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const text = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      try {
        lines.push(JSON.parse(text) as LogLine);
      } catch {
        lines.push({ msg: text });
      }
    }
    waiters.forEach((w) => w());
  });
  child.stderr.on('data', (b: Buffer) => stderr.push(b.toString('utf8')));
  const done = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      waiters.forEach((w) => w());
      resolve();
    }),
  );
  const tail = (): string => `${lines.slice(-8).map((l) => JSON.stringify(l)).join('\n')}\n${stderr.join('').slice(-800)}`;
  const agent: NetnsAgent = {
    pid,
    lines: () => lines,
    mark: () => lines.length,
    async waitFor(what, match, opts = {}) {
      const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
      let i = opts.from ?? 0;
      for (;;) {
        for (; i < lines.length; i++) if (match(lines[i]!)) return lines[i]!;
        if (exited) throw new Error(`the agent exited before ${what}:\n${tail()}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no ${what} within ${opts.timeoutMs ?? 20_000} ms:\n${tail()}`);
        await new Promise<void>((resolve) => {
          const wake = (): void => {
            waiters.delete(wake);
            clearTimeout(timer);
            resolve();
          };
          const timer = setTimeout(wake, Math.min(left, 200));
          waiters.add(wake);
        });
      }
    },
    cpuMs: () => processCpuMs(pid),
    memoryKb: () => ({ rss: procStatusKb(pid, 'VmRSS'), peak: procStatusKb(pid, 'VmHWM') }),
    signal: (sig) => {
      if (!exited) child.kill(sig);
    },
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await done;
      clearTimeout(timer);
    },
  };
  // The agent's first pass is a full read; after it, it is converged and idle.
  await agent.waitFor('the first pass', (l) => l.event === 'reconciled' || l.event === 'repaired' || l.event === 'installed', { timeoutMs: 30_000 });
  return agent;
}

/** A converged pass the agent logged ("reconciled", debug level), with what it read and how long it took. */
export const isPassLine = (l: LogLine): boolean => l.event === 'reconciled' || l.event === 'repaired';
