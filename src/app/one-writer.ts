import type { Logger } from 'pino';
import type { Config } from '../core/config.js';
import { LockHeldError } from '../errors.js';
import { type WriterLock, type WriterLockOptions, acquireWriterLock } from '../shell/writer-lock.js';

/**
 * Runs `work` (a whole apply or remove) as the only writer of this network namespace:
 * waits up to writerLockWaitSeconds for the writer lock, says once whom it waits for,
 * and releases the lock however `work` ends. A lock still held after the wait throws
 * LockHeldError (exit 3) naming the holder; nothing has been read or written by then.
 */
export async function asOneWriter<T>(config: Config, holder: { readonly verb: string; readonly version: string }, log: Logger, work: () => Promise<T>): Promise<T> {
  const lock = await acquireWriterLock({
    waitMs: config.writerLockWaitSeconds * 1000,
    holderInfo: { pid: process.pid, verb: holder.verb, version: holder.version },
    onWait: (other) => log.warn({ event: 'writer-lock-wait', holder: other }, `waiting up to ${config.writerLockWaitSeconds} s for ${other}, which holds the writer lock`),
  });
  try {
    return await work();
  } finally {
    await lock.release();
  }
}

/**
 * No apply, remove or pass holds the writer lock for a minute: a holder that keeps it
 * that long is stuck, or squatting the name (any process of the namespace can bind
 * it). The agent then writes without the lock: protection comes before serialisation.
 */
export const WRITER_STARVED_MS = 60_000;

export interface PassLock {
  /** Runs one pass under the writer lock; throws LockHeldError when it is held past the wait (the pass is retried). */
  around<T>(config: Config, work: () => Promise<T>): Promise<T>;
}

/** The agent's writer lock: taken for each pass, never for the agent's lifetime, so an operator's apply gets in between. */
export function createPassLock(opts: { readonly version: string; readonly log: Logger; readonly now?: () => number; readonly acquire?: (o: WriterLockOptions) => Promise<WriterLock> }): PassLock {
  const now = opts.now ?? Date.now;
  const acquire = opts.acquire ?? acquireWriterLock;
  // When the first attempt of the current run of refusals began; null after a success.
  let refusedSince: number | null = null;
  return {
    async around(config, work) {
      const attempt = now();
      const starved = refusedSince !== null && attempt - refusedSince >= WRITER_STARVED_MS;
      let lock: WriterLock | null = null;
      try {
        lock = await acquire({ waitMs: starved ? 0 : config.writerLockWaitSeconds * 1000, holderInfo: { pid: process.pid, verb: 'run', version: opts.version } });
        refusedSince = null;
      } catch (e) {
        if (!(e instanceof LockHeldError)) throw e;
        refusedSince ??= attempt;
        const refusedMs = now() - refusedSince;
        if (refusedMs < WRITER_STARVED_MS) throw e;
        opts.log.error({ event: 'writer-lock-starved', holder: e.holder, refusedSeconds: Math.round(refusedMs / 1000) }, `the writer lock has been held by ${e.holder} for ${Math.round(refusedMs / 1000)} s; this pass writes without it`);
      }
      try {
        return await work();
      } finally {
        await lock?.release();
      }
    },
  };
}
