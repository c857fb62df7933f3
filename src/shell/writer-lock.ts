import { setTimeout as sleep } from 'node:timers/promises';
import { describePeer, parsePeerInfo } from '../core/peer.js';
import { LockHeldError } from '../errors.js';
import { askAbstract, bindAbstract } from './abstract-socket.js';

/**
 * One writer per network namespace: `apply`, `remove` and each pass of `run` hold this
 * lock while they read, compute and write the tables, so no two of them interleave.
 * It is an abstract unix socket (src/shell/abstract-socket.ts): per network namespace,
 * freed by the kernel when its holder dies, and it answers a connection with the
 * holder's own line ({pid, verb, version}), which a waiter shows when it gives up.
 */
export const WRITER_LOCK_NAME = 'imds-guard/writer';

const DEFAULT_POLL_MS = 50;
// How long a holder may take to say who it is before the waiter calls it unknown.
const ASK_TIMEOUT_MS = 500;

export interface WriterLock {
  release(): Promise<void>;
}

export interface WriterLockOptions {
  /** How long to keep trying while another process holds the lock; 0: try once. */
  readonly waitMs: number;
  readonly pollMs?: number;
  /** What this process answers to a waiter: pid, verb, version. */
  readonly holderInfo: object;
  /** Called once, with the holder's description, when the lock is found held and there is time to wait. */
  readonly onWait?: (holder: string) => void;
  /** Another name, for tests. */
  readonly name?: string;
}

export async function acquireWriterLock(opts: WriterLockOptions): Promise<WriterLock> {
  const name = opts.name ?? WRITER_LOCK_NAME;
  const line = JSON.stringify(opts.holderInfo);
  const deadline = Date.now() + opts.waitMs;
  let waiting = false;
  for (;;) {
    const bound = await bindAbstract(name, () => line);
    if (bound !== null) return { release: () => bound.close() };
    const late = Date.now() >= deadline;
    if (late || !waiting) {
      const holder = describePeer(parsePeerInfo(await askAbstract(name, ASK_TIMEOUT_MS)));
      if (late) {
        throw new LockHeldError(
          `the writer lock of this network namespace is held by ${holder}, which is changing the tables; ${opts.waitMs > 0 ? `gave up after ${opts.waitMs / 1000} s` : 'did not wait'} (writerLockWaitSeconds)`,
          holder,
        );
      }
      waiting = true;
      opts.onWait?.(holder);
    }
    await sleep(Math.max(0, Math.min(opts.pollMs ?? DEFAULT_POLL_MS, deadline - Date.now())));
  }
}
