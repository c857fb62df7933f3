import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Logger } from 'pino';
import { WRITER_STARVED_MS, createPassLock } from '../../src/app/one-writer.js';
import { resolveConfig } from '../../src/core/config.js';
import { LockHeldError } from '../../src/errors.js';
import type { WriterLockOptions } from '../../src/shell/writer-lock.js';

const config = resolveConfig([{ source: 'test', values: { writerLockWaitSeconds: 30 } }]);

/** A fake clock and a fake lock: each acquire advances the clock by its wait when refused. */
function harness(held: () => boolean) {
  let clock = 1_000_000;
  const log: { event: unknown }[] = [];
  const calls: { waitMs: number; at: number }[] = [];
  let releases = 0;
  const lock = createPassLock({
    version: '0.1.0',
    log: { error: (o: { event: unknown }) => void log.push(o) } as unknown as Logger,
    now: () => clock,
    acquire: async (o: WriterLockOptions) => {
      calls.push({ waitMs: o.waitMs, at: clock });
      if (!held()) return { release: async () => void releases++ };
      clock += o.waitMs;
      throw new LockHeldError('held', 'imds-guard apply (pid 9, version 0.1.0)');
    },
  });
  return { lock, log, calls, releases: () => releases, advance: (ms: number) => void (clock += ms) };
}

test('a pass runs under the lock, waits up to writerLockWaitSeconds for it, and releases it even when the pass throws', async () => {
  const h = harness(() => false);
  assert.equal(await h.lock.around(config, async () => 'done'), 'done');
  await assert.rejects(h.lock.around(config, async () => Promise.reject(new Error('restore failed'))), /restore failed/);
  assert.deepEqual(h.calls.map((c) => c.waitMs), [30_000, 30_000]);
  assert.equal(h.releases(), 2);
});

test('a lock held past the wait fails the pass with LockHeldError, and the pass does not run', async () => {
  const h = harness(() => true);
  let ran = false;
  await assert.rejects(h.lock.around(config, async () => void (ran = true)), LockHeldError);
  assert.equal(ran, false);
  assert.deepEqual(h.log, []);
});

test('a lock refused for a minute on end is starved: the pass writes without it, says so, and later passes do not wait', async () => {
  const h = harness(() => true);
  const passes: string[] = [];
  const work = async () => void passes.push('pass');
  await assert.rejects(h.lock.around(config, work), LockHeldError); // 0 s..30 s
  h.advance(2_000);
  await h.lock.around(config, work); // 32 s..62 s: refused for more than a minute
  assert.deepEqual(passes, ['pass']);
  assert.deepEqual(h.log.map((l) => l.event), ['writer-lock-starved']);
  await h.lock.around(config, work);
  assert.deepEqual(h.calls.map((c) => c.waitMs), [30_000, 30_000, 0]);
  assert.ok(WRITER_STARVED_MS === 60_000);
});

test('a long quiet time between passes is not starvation: a pass after ten idle minutes still waits and does not write when refused', async () => {
  let held = false;
  const h = harness(() => held);
  await h.lock.around(config, async () => {});
  h.advance(600_000);
  held = true;
  await assert.rejects(h.lock.around(config, async () => {}), LockHeldError);
  assert.deepEqual(h.log, []);
});

test('one success ends the starvation: the next refusal waits the full time again', async () => {
  let held = true;
  const h = harness(() => held);
  await assert.rejects(h.lock.around(config, async () => {}));
  h.advance(40_000);
  await h.lock.around(config, async () => {}); // starved: no wait, written without the lock
  held = false;
  await h.lock.around(config, async () => {});
  held = true;
  await assert.rejects(h.lock.around(config, async () => {}), LockHeldError);
  assert.deepEqual(h.calls.map((c) => c.waitMs), [30_000, 0, 0, 30_000]);
  assert.deepEqual(h.log.map((l) => l.event), ['writer-lock-starved']);
});
