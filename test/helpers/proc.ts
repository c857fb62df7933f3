import { spawn } from 'node:child_process';

/** How a child process ended. A non-zero exit is a result, not an error. */
export interface ProcResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ProcOptions {
  readonly input?: string | undefined;
  readonly env?: NodeJS.ProcessEnv | undefined;
  readonly cwd?: string | undefined;
  /** Killed with SIGKILL after this long (default 120 s); the result then carries code 137. */
  readonly timeoutMs?: number | undefined;
}

/**
 * Runs `file args` with an argument array (never through a shell), feeds it `input`,
 * and resolves once its output is closed. Rejects only when the process cannot start.
 */
export function runProc(file: string, args: readonly string[], opts: ProcOptions = {}): Promise<ProcResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 120_000,
      killSignal: 'SIGKILL',
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    // A child that exits without reading its input must not crash us with EPIPE.
    child.stdin.on('error', () => {});
    child.on('close', (code, signal) => {
      resolve({
        code: code ?? (signal === 'SIGKILL' ? 137 : 128),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** The last lines of a process's stderr, for an error message that fits on a screen. */
export function stderrTail(r: ProcResult, lines = 15): string {
  return r.stderr.trimEnd().split('\n').slice(-lines).join('\n');
}
