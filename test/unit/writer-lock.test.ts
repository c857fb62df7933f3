import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { LockHeldError } from '../../src/errors.js';
import { abstractPath, askAbstract, bindAbstract } from '../../src/shell/abstract-socket.js';
import { acquireWriterLock } from '../../src/shell/writer-lock.js';

// Names of this process alone: these tests never touch the real lock of the namespace they run in.
let n = 0;
const uniqueName = () => `imds-guard-test/${process.pid}/${++n}`;
const holderInfo = { pid: 4242, verb: 'apply', version: '0.1.0' };

test('an abstract name fills the whole of sun_path (108 bytes), so every libuv binds the same address', () => {
  const p = abstractPath('imds-guard/writer');
  assert.equal(Buffer.byteLength(p), 108);
  assert.ok(p.startsWith('\0imds-guard/writer.'));
  assert.throws(() => abstractPath('x'.repeat(108)));
});

test('a bound name is in use until it is closed, and free again at once afterwards', async () => {
  const name = uniqueName();
  const first = await bindAbstract(name, () => 'one');
  assert.ok(first !== null);
  assert.equal(await bindAbstract(name, () => 'two'), null, 'EADDRINUSE expected for a name that is bound');
  assert.equal(await askAbstract(name, 500), 'one');
  await first.close();
  const again = await bindAbstract(name, () => 'three');
  assert.ok(again !== null, 'the name stayed taken after close');
  await again.close();
  assert.equal(await askAbstract(name, 500), null, 'nobody holds the name, so nobody answers');
});

test('a second writer that may not wait fails at once with LockHeldError (exit 3) naming the holder', async () => {
  const name = uniqueName();
  const held = await acquireWriterLock({ name, waitMs: 0, holderInfo });
  try {
    const t0 = Date.now();
    await assert.rejects(acquireWriterLock({ name, waitMs: 0, holderInfo: { pid: 1, verb: 'run', version: '0.1.0' } }), (e: unknown) => {
      assert.ok(e instanceof LockHeldError);
      assert.equal(e.code, 'writer-lock-held');
      assert.equal(e.exitCode, 3);
      assert.equal(e.holder, 'imds-guard apply (pid 4242, version 0.1.0)');
      assert.equal(e.message, 'the writer lock of this network namespace is held by imds-guard apply (pid 4242, version 0.1.0), which is changing the tables; did not wait (writerLockWaitSeconds)');
      return true;
    });
    assert.ok(Date.now() - t0 < 1_000);
  } finally {
    await held.release();
  }
});

test('a second writer waits, is told whom it waits for once, and gets the lock as soon as the first releases it', async () => {
  const name = uniqueName();
  const held = await acquireWriterLock({ name, waitMs: 0, holderInfo });
  const told: string[] = [];
  const t0 = Date.now();
  setTimeout(() => void held.release(), 300);
  const second = await acquireWriterLock({ name, waitMs: 5_000, pollMs: 20, holderInfo, onWait: (h) => told.push(h) });
  const waited = Date.now() - t0;
  await second.release();
  assert.deepEqual(told, ['imds-guard apply (pid 4242, version 0.1.0)']);
  assert.ok(waited >= 280 && waited < 2_000, `waited ${waited} ms`);
});

test('a process squatting the name without answering is named as such, and does not stall the waiter past its bound', async () => {
  const name = uniqueName();
  const open: net.Socket[] = [];
  const squatter = net.createServer((s) => void open.push(s)); // accepts and says nothing
  await new Promise<void>((r) => squatter.listen({ path: abstractPath(name) }, r));
  try {
    const t0 = Date.now();
    await assert.rejects(acquireWriterLock({ name, waitMs: 0, holderInfo }), /held by a process that does not say it is imds-guard/);
    assert.ok(Date.now() - t0 < 1_500);
  } finally {
    for (const s of open) s.destroy();
    await new Promise((r) => squatter.close(r));
  }
});

test('release does not wait for a client that keeps its connection open', async () => {
  const name = uniqueName();
  const held = await acquireWriterLock({ name, waitMs: 0, holderInfo });
  const client = net.connect({ path: abstractPath(name) });
  await new Promise((r) => client.once('connect', r));
  client.pause(); // never reads, never closes
  const t0 = Date.now();
  await held.release();
  assert.ok(Date.now() - t0 < 500);
  client.destroy();
  const again = await acquireWriterLock({ name, waitMs: 0, holderInfo });
  await again.release();
});
