import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPassRunner } from '../../src/app/pass-runner.js';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

test('a burst of requests during a pass is coalesced into exactly one more pass', async () => {
  const passes: string[][] = [];
  let release: () => void = () => {};
  const runner = createPassRunner(async (reasons) => {
    passes.push(reasons);
    if (passes.length === 1) await new Promise<void>((r) => (release = r));
  });
  runner.request('start');
  await tick();
  for (let i = 0; i < 50; i++) runner.request('docker-create');
  release();
  await runner.idle(1000);
  assert.equal(passes.length, 2);
  assert.deepEqual(passes[1], ['docker-create']);
});

test('passes never overlap', async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  const runner = createPassRunner(async () => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await tick(5);
    inFlight--;
  });
  for (let i = 0; i < 5; i++) {
    runner.request('a');
    await tick(2);
  }
  await runner.idle(1000);
  assert.equal(maxInFlight, 1);
});

test('a failing pass does not stop later passes', async () => {
  let n = 0;
  const runner = createPassRunner(async () => {
    n++;
    if (n === 1) throw new Error('boom');
  });
  runner.request('a');
  await runner.idle(1000);
  runner.request('b');
  await runner.idle(1000);
  assert.equal(n, 2);
});

test('after stop, requests start no pass', async () => {
  let n = 0;
  const runner = createPassRunner(async () => {
    n++;
  });
  runner.stop();
  runner.request('a');
  await runner.idle(100);
  assert.equal(n, 0);
});
