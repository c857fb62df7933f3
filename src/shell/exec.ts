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

function packageOf(file: string): string {
  if (file.includes('tables')) return 'iptables';
  return file;
}

/** The first line of a tool's complaint, without its "Try `--help`" advice. */
export function firstLine(stderr: string): string {
  return stderr.split('\n').map((l) => l.trim()).find((l) => l !== '' && !l.startsWith('Try ')) ?? '';
}
