import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Logger } from 'pino';
import { watchDocker } from '../../src/app/docker-watch.js';
import type { DockerPort } from '../../src/shell/docker.js';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** A DockerPort whose event subscriptions resolve or fail only when the test says so. */
function gatedDocker() {
  const calls: { resolve(unsubscribe: () => void): void; reject(e: Error): void }[] = [];
  const docker: DockerPort = {
    facts: () => Promise.reject(new Error('not used')),
    containerState: () => Promise.reject(new Error('not used')),
    watchNetworks: () => new Promise((resolve, reject) => calls.push({ resolve, reject })),
  };
  return { docker, calls };
}

function recordingLog() {
  const events: unknown[] = [];
  const record = (o: { event?: unknown }) => void events.push(o.event);
  return { events, log: { info: record, warn: record, error: record, debug: record } as unknown as Logger };
}

const FAST = { initialMs: 5, maxMs: 5 };

test('stopped while the event stream is being opened: the stream that arrives afterwards is closed at once, and nothing is reported', async () => {
  const { docker, calls } = gatedDocker();
  const { log, events } = recordingLog();
  let connected = 0;
  const watcher = watchDocker(docker, log, { onEvent: () => {}, onConnected: () => connected++ }, FAST);
  assert.equal(calls.length, 1);
  watcher.stop();
  let unsubscribed = 0;
  calls[0]!.resolve(() => unsubscribed++);
  await tick(20);
  assert.equal(unsubscribed, 1, 'the stream that arrived after stop() was left open');
  assert.equal(connected, 0);
  assert.deepEqual(events, []);
  assert.equal(calls.length, 1, 'it subscribed again after stop()');
});

test('stopped while the connection attempt fails: no disconnect is logged and no retry is scheduled', async () => {
  const { docker, calls } = gatedDocker();
  const { log, events } = recordingLog();
  const watcher = watchDocker(docker, log, { onEvent: () => {}, onConnected: () => {} }, FAST);
  watcher.stop();
  calls[0]!.reject(new Error('connect ECONNREFUSED'));
  await tick(30);
  assert.deepEqual(events, []);
  assert.equal(calls.length, 1);
});

test('stopped after connecting: the stream is closed once', async () => {
  const { docker, calls } = gatedDocker();
  const { log, events } = recordingLog();
  const watcher = watchDocker(docker, log, { onEvent: () => {}, onConnected: () => {} }, FAST);
  let unsubscribed = 0;
  calls[0]!.resolve(() => unsubscribed++);
  await tick();
  assert.deepEqual(events, ['docker-connected']);
  watcher.stop();
  watcher.stop();
  assert.equal(unsubscribed, 1);
});

test('a failed connection is retried until stopped', async () => {
  const { docker, calls } = gatedDocker();
  const { log, events } = recordingLog();
  const watcher = watchDocker(docker, log, { onEvent: () => {}, onConnected: () => {} }, FAST);
  calls[0]!.reject(new Error('connect ENOENT'));
  await tick(30);
  assert.equal(calls.length, 2);
  assert.deepEqual(events, ['docker-disconnected']);
  watcher.stop();
  calls[1]!.reject(new Error('connect ENOENT'));
  await tick(30);
  assert.equal(calls.length, 2);
});
