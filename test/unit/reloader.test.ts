import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ReloadOutcome, type ReloadSteps, createReloader } from '../../src/app/reloader.js';

interface State {
  readonly name: string;
}

/** Steps that record what happened, in order; `load` and `start` do what the test queues. */
function recordingSteps() {
  const log: string[] = [];
  const outcomes: ReloadOutcome<State>[] = [];
  const loads: (() => Promise<string>)[] = [];
  const starts: ((config: string) => Promise<State>)[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const steps: ReloadSteps<string, State> = {
    async load() {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        const next = loads.shift() ?? (() => Promise.resolve('cfg'));
        const c = await next();
        log.push(`load ${c}`);
        return c;
      } finally {
        inFlight--;
      }
    },
    async start(config) {
      const next = starts.shift() ?? ((c: string) => Promise.resolve({ name: c }));
      const r = await next(config);
      log.push(`start ${r.name}`);
      return r;
    },
    stop(r) {
      log.push(`stop ${r.name}`);
    },
    report(o) {
      outcomes.push(o);
      log.push(`report ${o.kind}`);
    },
  };
  return { steps, log, outcomes, loads, starts, maxInFlight: () => maxInFlight };
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

test('a reload builds the new running state before it stops the old one', async () => {
  const r = recordingSteps();
  const reloader = createReloader<string, State>({ name: 'old' }, r.steps);
  r.loads.push(() => Promise.resolve('new'));
  await reloader.request();
  assert.deepEqual(r.log, ['load new', 'start new', 'stop old', 'report reloaded']);
  assert.equal(reloader.current().name, 'new');
});

test('a configuration that is rejected keeps the old state running, untouched, and says why', async () => {
  const r = recordingSteps();
  const reloader = createReloader<string, State>({ name: 'old' }, r.steps);
  r.loads.push(() => Promise.reject(new Error('driftSchedule "61 * * * * *" is not a cron expression')));
  await reloader.request();
  assert.deepEqual(r.log, ['report rejected']);
  assert.equal(reloader.current().name, 'old');
  const o = r.outcomes[0];
  assert.ok(o?.kind === 'rejected' && o.error instanceof Error && /61/.test(o.error.message));
});

test('a valid configuration whose running state cannot be built keeps the old state running (reload-failed)', async () => {
  const r = recordingSteps();
  const reloader = createReloader<string, State>({ name: 'old' }, r.steps);
  r.starts.push(() => Promise.reject(new Error("ENOENT: no such file or directory, open '/certs/ca.pem'")));
  await reloader.request();
  assert.deepEqual(r.log, ['load cfg', 'report failed']);
  assert.equal(reloader.current().name, 'old');
});

test('SIGHUPs that arrive during a reload fold into exactly one more, which never overlaps the first', async () => {
  const r = recordingSteps();
  const reloader = createReloader<string, State>({ name: 'v0' }, r.steps);
  const slow = deferred<State>();
  r.loads.push(() => Promise.resolve('v1'), () => Promise.resolve('v2'));
  r.starts.push(() => slow.promise);
  const first = reloader.request();
  await new Promise((res) => setTimeout(res, 5));
  const more = Array.from({ length: 5 }, () => reloader.request());
  slow.resolve({ name: 'v1' });
  await Promise.all([first, ...more]);
  assert.deepEqual(r.log, ['load v1', 'start v1', 'stop v0', 'report reloaded', 'load v2', 'start v2', 'stop v1', 'report reloaded']);
  assert.equal(r.maxInFlight(), 1);
  assert.equal(reloader.current().name, 'v2');
});

test('a state that finishes building after close() is stopped, not swapped in', async () => {
  const r = recordingSteps();
  const reloader = createReloader<string, State>({ name: 'old' }, r.steps);
  const slow = deferred<State>();
  r.starts.push(() => slow.promise);
  const done = reloader.request();
  await new Promise((res) => setTimeout(res, 5));
  reloader.close();
  slow.resolve({ name: 'late' });
  await done;
  assert.deepEqual(r.log, ['load cfg', 'start late', 'stop late']);
  assert.equal(reloader.current().name, 'old');
  await reloader.request();
  assert.equal(r.log.length, 3, 'a reload ran after close()');
});

test('a failure to stop the old state, or a report that throws, does not stop later reloads', async () => {
  const r = recordingSteps();
  let stops = 0;
  const reloader = createReloader<string, State>(
    { name: 'v0' },
    {
      ...r.steps,
      stop: () => {
        stops++;
        throw new Error('cron stop failed');
      },
      report: (o) => {
        r.outcomes.push(o);
        throw new Error('logger broke');
      },
    },
  );
  r.loads.push(() => Promise.resolve('v1'), () => Promise.resolve('v2'));
  await reloader.request();
  await reloader.request();
  assert.equal(stops, 2);
  assert.equal(reloader.current().name, 'v2');
  const o = r.outcomes[1];
  assert.ok(o?.kind === 'reloaded' && o.stopError instanceof Error);
});
