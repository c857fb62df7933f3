import { type Clock, type Timer, realClock } from '../shell/clock.js';

/**
 * Runs reconcile passes one at a time and coalesces wake-ups, like kube-proxy's
 * bounded-frequency runner: a request while a pass runs (or waits for its turn)
 * schedules exactly one more pass, however many arrive. Events only wake the loop; each
 * pass reads the full state itself.
 *
 * Two bounds keep a busy host or a fight from turning the agent into a busy loop:
 * - passes start at least `minIntervalMs` apart (a burst of netfilter events, or our own
 *   write seen by the netfilter monitor, costs one more pass, not one per event);
 * - when consecutive repairs repair the same thing (someone keeps re-inserting a rule
 *   above our jump), the wait before that repair is made again doubles per repeat, up to
 *   `maxBackoffMs`. Passes still run on wake-ups during it, at most every
 *   `peekIntervalMs`, with a `hold` on that one repair: a pass that finds only it puts it
 *   off until the backoff ends (the runner asks for a pass then), and any other repair
 *   (a different tamper, which the runner cannot know of before a pass looks) is made at
 *   once and ends the backoff. So does a pass that finds nothing to repair once two
 *   intervals have passed since the last repair (the pass right after a repair usually
 *   only sees our own write, which says nothing about whether the fight is over).
 * `exempt` reasons (a new Docker network) wait out the minimum interval only, never a
 * repair backoff: a contest in the nat table must not delay covering a new bridge.
 */
export interface PassOutcome {
  /** What the pass repaired (`repairSignature` of its drift), or null when it repaired nothing. */
  readonly repairedSignature: string | null;
  /** It found only the held repair and put it off. */
  readonly held?: boolean;
}

/** A repair not to make again before `untilMs` (the runner's clock: performance.now() for the real one). */
export interface Hold {
  readonly signature: string;
  readonly untilMs: number;
}

export type Pass = (reasons: string[], hold: Hold | null) => Promise<PassOutcome | void>;

export interface Backoff {
  readonly intervalMs: number;
  /** Identical repairs in a row beyond the first (0: no backoff). */
  readonly repeats: number;
  readonly signature: string | null;
}

export interface PassRunnerOptions {
  /** Default 100 ms: a pass takes tens of ms, so this caps passes near 10/s without delaying the first of a burst. */
  readonly minIntervalMs?: number;
  /** Default 30 s: the drift check's own period, so a contest is never retried less often than that. */
  readonly maxBackoffMs?: number;
  /** Default 1 s: how often wake-ups still run a pass during a longer backoff, to find a different repair. */
  readonly peekIntervalMs?: number;
  readonly exempt?: (reason: string) => boolean;
  readonly clock?: Clock;
  /** Told whenever the interval between passes changes (to log a backoff starting, growing or ending). */
  readonly onBackoff?: (b: Backoff) => void;
}

export interface PassRunner {
  request(reason: string): void;
  /** Resolves when no pass is running or pending (or `timeoutMs` passed). */
  idle(timeoutMs: number): Promise<void>;
  stop(): void;
  /** The interval that now applies between pass starts. */
  backoff(): Backoff;
}

export const DEFAULT_MIN_INTERVAL_MS = 100;
export const DEFAULT_MAX_BACKOFF_MS = 30_000;
export const DEFAULT_PEEK_INTERVAL_MS = 1_000;
/** The reason of the pass that makes a held repair when its backoff ends. */
export const HELD_REPAIR = 'held-repair';

export function createPassRunner(pass: Pass, opts: PassRunnerOptions = {}): PassRunner {
  const minMs = opts.minIntervalMs ?? DEFAULT_MIN_INTERVAL_MS;
  const maxMs = Math.max(minMs, opts.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS);
  const peekMs = Math.max(minMs, opts.peekIntervalMs ?? DEFAULT_PEEK_INTERVAL_MS);
  const clock = opts.clock ?? realClock;
  const exempt = opts.exempt ?? (() => false);

  let pending: string[] = [];
  let running = false;
  let stopped = false;
  let timer: { at: number; handle: Timer } | null = null;
  let lastStart: number | null = null;
  let repeats = 0;
  let lastSignature: string | null = null;
  let lastRepairAt = 0;
  let heldTimer: Timer | null = null;
  const idleWaiters = new Set<() => void>();

  const backoffMs = (): number => Math.min(minMs * 2 ** repeats, maxMs);
  const current = (): Backoff => ({ intervalMs: backoffMs(), repeats, signature: lastSignature });
  const quiet = (): boolean => !running && timer === null && pending.length === 0;
  const notifyIdle = (): void => {
    if (quiet()) for (const w of [...idleWaiters]) w();
  };

  const learn = (startedAt: number, outcome: PassOutcome | void): void => {
    const before = backoffMs();
    if (outcome?.held === true) {
      // Made when the backoff ends, unless a pass before then makes it moot.
      heldTimer ??= clock.after(Math.max(0, lastRepairAt + before - clock.now()), () => {
        heldTimer = null;
        if (!stopped) {
          pending.push(HELD_REPAIR);
          schedule();
        }
      });
      return;
    }
    const signature = outcome?.repairedSignature ?? null;
    if (signature !== null) {
      repeats = signature === lastSignature ? repeats + 1 : 0;
      lastSignature = signature;
      lastRepairAt = startedAt;
    } else if (lastSignature !== null && startedAt - lastRepairAt >= 2 * before) {
      repeats = 0;
      lastSignature = null;
    }
    if (backoffMs() !== before) opts.onBackoff?.(current());
  };

  const runNow = (): void => {
    const reasons = [...new Set(pending)];
    pending = [];
    running = true;
    const startedAt = clock.now();
    lastStart = startedAt;
    const until = lastRepairAt + backoffMs();
    const hold = lastSignature !== null && startedAt < until ? { signature: lastSignature, untilMs: until } : null;
    void (async () => {
      let outcome: PassOutcome | void = undefined;
      let failed = false;
      try {
        outcome = await pass(reasons, hold);
      } catch {
        failed = true; // the pass reports its own errors
      }
      running = false;
      if (!failed) learn(startedAt, outcome);
      schedule();
      notifyIdle();
    })();
  };

  function schedule(): void {
    if (stopped || running || pending.length === 0) return;
    // A held repair comes when its backoff ends, whenever the last look was.
    const interval = pending.some(exempt) || pending.includes(HELD_REPAIR) ? minMs : Math.min(backoffMs(), peekMs);
    const at = lastStart === null ? clock.now() : lastStart + interval;
    if (timer !== null) {
      if (timer.at <= at) return;
      timer.handle.cancel(); // an exempt reason arrived: it may go sooner
      timer = null;
    }
    if (at <= clock.now()) {
      runNow();
      return;
    }
    timer = {
      at,
      handle: clock.after(at - clock.now(), () => {
        timer = null;
        schedule();
      }),
    };
  }

  return {
    request(reason) {
      if (stopped) return;
      pending.push(reason);
      schedule();
    },
    idle(timeoutMs) {
      if (quiet()) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const done = (): void => {
          idleWaiters.delete(done);
          t.cancel();
          resolve();
        };
        const t = clock.after(timeoutMs, done);
        idleWaiters.add(done);
      });
    },
    stop() {
      stopped = true;
      pending = [];
      timer?.handle.cancel();
      timer = null;
      heldTimer?.cancel();
      heldTimer = null;
      notifyIdle();
    },
    backoff: current,
  };
}
