/**
 * Runs reconcile passes one at a time and coalesces wake-ups: a request that arrives
 * while a pass runs schedules exactly one more pass, however many arrive (kube-proxy's
 * bounded-frequency runner, without the minimum interval: a new Docker network must be
 * covered at once). Events only wake the loop; each pass reads the full state itself.
 */
export interface PassRunner {
  request(reason: string): void;
  /** Resolves when no pass is running or pending (or `timeoutMs` passed). */
  idle(timeoutMs: number): Promise<void>;
  stop(): void;
}

export function createPassRunner(pass: (reasons: string[]) => Promise<void>): PassRunner {
  let running: Promise<void> | null = null;
  let pending: string[] = [];
  let stopped = false;

  const loop = async (): Promise<void> => {
    while (pending.length > 0 && !stopped) {
      const reasons = [...new Set(pending)];
      pending = [];
      await pass(reasons).catch(() => {}); // the pass reports its own errors
    }
    running = null;
  };

  return {
    request(reason) {
      if (stopped) return;
      pending.push(reason);
      running ??= loop();
    },
    async idle(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
      while (running !== null) {
        const done = await Promise.race([running.then(() => true), timeout.then(() => false)]);
        if (!done) break;
      }
      clearTimeout(timer);
    },
    stop() {
      stopped = true;
      pending = [];
    },
  };
}
