import { spawn } from 'node:child_process';
import { CommandError } from '../errors.js';

export interface ProcessResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly input?: string;
  readonly timeoutMs?: number;
}

/** The one way imds-guard starts a process: an argument array, never a shell. */
export type RunProcess = (file: string, args: readonly string[], opts?: RunOptions) => Promise<ProcessResult>;

export const runProcess: RunProcess = (file, args, opts = {}) =>
  new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    // Our own timer, not spawn's `timeout`: that one is cleared only on 'exit', which a
    // command that is not installed never emits, so it kept a finished CLI alive for 2 min.
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (e.code === 'ENOENT') reject(new CommandError(`${file} not found: install it (Debian/Alpine package "${packageOf(file)}")`, 'command-missing', file));
      else if (e.code === 'EACCES' || e.code === 'EPERM') reject(new CommandError(`${file}: permission denied`, 'permission-denied', file));
      else reject(new CommandError(`${file}: ${e.message}`, 'command-failed', file));
    });
    // A restore reading a payload is done with stdin once it fails; ignore the broken pipe.
    child.stdin.on('error', () => {});
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.end(opts.input ?? '');
  });

/** A long-running child (a monitor) whose stdout is read line by line. */
export interface LineChild {
  readonly pid: number | undefined;
  /** Signals the child by its pid (default SIGTERM); nothing once it has exited. */
  kill(signal?: NodeJS.Signals): void;
}

export interface LineExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Set when the child could not be started at all (not installed, not permitted). */
  readonly error: CommandError | null;
  /** The last lines it wrote to stderr, for the log. */
  readonly stderr: string;
}

export interface LineHandlers {
  line(text: string): void;
  /** Called exactly once, when the child is gone. */
  exit(e: LineExit): void;
}

/** Starts `file args` (an argument array, never a shell) and hands each line of its stdout to `handlers.line`. */
export type SpawnLines = (file: string, args: readonly string[], handlers: LineHandlers) => LineChild;

const STDERR_KEEP = 2_048;

export const spawnLines: SpawnLines = (file, args, handlers) => {
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let partial = '';
  let stderr = '';
  let exited = false;
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const text = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      handlers.line(text);
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-STDERR_KEEP)));
  const finish = (code: number | null, signal: NodeJS.Signals | null, error: CommandError | null): void => {
    if (exited) return;
    exited = true;
    handlers.exit({ code, signal, error, stderr: stderr.trim() });
  };
  child.on('error', (e: NodeJS.ErrnoException) => {
    // 'error' without a pid: it never ran. With a pid (a failed kill), 'close' still follows.
    if (child.pid !== undefined) return;
    const code = e.code === 'ENOENT' ? 'command-missing' : e.code === 'EACCES' || e.code === 'EPERM' ? 'permission-denied' : 'command-failed';
    finish(null, null, new CommandError(code === 'command-missing' ? `${file} not found: install it (Debian/Alpine package "${packageOf(file)}")` : `${file}: ${e.message}`, code, file));
  });
  child.on('close', (code, signal) => {
    // What a dying child wrote last without a newline still counts (xtables-monitor's half-printed event).
    if (partial !== '') handlers.line(partial);
    partial = '';
    finish(code, signal, null);
  });
  return {
    pid: child.pid,
    kill(signal = 'SIGTERM') {
      if (!exited && child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
};

function packageOf(file: string): string {
  if (file === 'nft') return 'nftables';
  if (file.includes('tables')) return 'iptables';
  return file;
}

/** The first line of a tool's complaint, without its "Try `--help`" advice. */
export function firstLine(stderr: string): string {
  return stderr.split('\n').map((l) => l.trim()).find((l) => l !== '' && !l.startsWith('Try ')) ?? '';
}
