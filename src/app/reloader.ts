/**
 * SIGHUP, made unable to end the agent. A reload loads the configuration, builds the
 * complete new running state (ports, cron job, Docker watcher) while the old one keeps
 * working, and only then swaps it in and stops the old one. When loading is refused
 * or building throws, the old state simply stays. Reloads never overlap: signals that
 * arrive during one fold into exactly one more, which reads the file as it is by then.
 */
export type ReloadOutcome<R> =
  | { readonly kind: 'reloaded'; readonly running: R; readonly stopError?: unknown }
  /** The new configuration was refused; the running state stays. */
  | { readonly kind: 'rejected'; readonly error: unknown }
  /** The configuration is valid but its running state could not be built; the running state stays. */
  | { readonly kind: 'failed'; readonly error: unknown };

export interface ReloadSteps<C, R> {
  load(): Promise<C>;
  /** Builds and starts a running state; must leave nothing behind when it throws. */
  start(config: C): Promise<R>;
  stop(running: R): void | Promise<void>;
  report(outcome: ReloadOutcome<R>): void;
}

export interface Reloader<R> {
  /** Asks for a reload; resolves once no reload is running or pending. Never rejects. */
  request(): Promise<void>;
  /** The running state in effect now. */
  current(): R;
  /** No reload starts after this; a state finished building afterwards is stopped, not swapped in. */
  close(): void;
}

export function createReloader<C, R>(initial: R, steps: ReloadSteps<C, R>): Reloader<R> {
  let current = initial;
  let pending = false;
  let loop: Promise<void> | null = null;
  let closed = false;

  const stopQuietly = async (r: R): Promise<unknown> => {
    try {
      await steps.stop(r);
      return undefined;
    } catch (e) {
      return e ?? new Error('stop failed');
    }
  };

  const once = async (): Promise<void> => {
    let config: C;
    try {
      config = await steps.load();
    } catch (error) {
      steps.report({ kind: 'rejected', error });
      return;
    }
    if (closed) return;
    let next: R;
    try {
      next = await steps.start(config);
    } catch (error) {
      steps.report({ kind: 'failed', error });
      return;
    }
    if (closed) {
      await stopQuietly(next);
      return;
    }
    const old = current;
    current = next;
    const stopError = await stopQuietly(old);
    steps.report(stopError === undefined ? { kind: 'reloaded', running: next } : { kind: 'reloaded', running: next, stopError });
  };

  const run = async (): Promise<void> => {
    while (pending && !closed) {
      pending = false;
      // `report` is the caller's code: whatever it throws must not end the loop (or the agent).
      await once().catch(() => {});
    }
    loop = null;
  };

  return {
    request() {
      if (closed) return Promise.resolve();
      pending = true;
      loop ??= run();
      return loop;
    },
    current: () => current,
    close() {
      closed = true;
      pending = false;
    },
  };
}
