import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './cli.js';
import type { Netns } from './netns.js';

/**
 * The built agent without Docker (`node dist/cli.js run --no-docker`) in a test's own
 * namespace, its drift check once an hour so that every repair a test sees came from a
 * watcher. Its JSON log lines are parsed as they arrive.
 */
export interface BareAgent {
  readonly logs: readonly Record<string, unknown>[];
  /** The agent's --state-dir (its state.json, which `audit --state-dir` reads). */
  readonly stateDir: string;
  /** Resolves with the first log line from index `from` on that `match` accepts. */
  waitFor(what: string, match: (l: Record<string, unknown>) => boolean, opts?: { from?: number; timeoutMs?: number }): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export const HOURLY = '0 0 * * * *';

/** Calls `each` with every line `child` writes to stdout. */
export function onLines(child: ChildProcess, each: (text: string) => void): void {
  let partial = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      each(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
  });
}

export function startBareAgent(ns: Netns, args: readonly string[], env: NodeJS.ProcessEnv = process.env): BareAgent {
  const dir = mkdtempSync(join(tmpdir(), 'imdsg-bare-agent-'));
  const child = spawn('nsenter', [`--net=${ns.path}`, process.execPath, CLI, 'run', '--no-docker', '--state-dir', join(dir, 'state'), '--boot-script', 'never', '--no-conntrack', '--drift-schedule', HOURLY, '--log-level', 'debug', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  child.stderr!.on('data', (b: Buffer) => stderr.push(b.toString('utf8')));
  onLines(child, (text) => {
    try {
      logs.push(JSON.parse(text) as Record<string, unknown>);
    } catch {
      logs.push({ msg: text });
    }
  });
  const tail = (): string => `${logs.slice(-8).map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${stderr.join('').slice(-500)}`;
  return {
    logs,
    stateDir: join(dir, 'state'),
    async waitFor(what, match, opts = {}) {
      const t0 = performance.now();
      for (;;) {
        const hit = logs.slice(opts.from ?? 0).find(match);
        if (hit !== undefined) return hit;
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the agent exited before ${what}\n${tail()}`);
        if (performance.now() - t0 > (opts.timeoutMs ?? 20_000)) throw new Error(`no ${what} within ${opts.timeoutMs ?? 20_000} ms\n${tail()}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await gone;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
