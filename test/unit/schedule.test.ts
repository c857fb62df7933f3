import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CronTime } from 'cron';
import { DEFAULT_DRIFT_SCHEDULE, everySeconds, nextAligned, scheduleProblem } from '../../src/core/schedule.js';
import { scheduleJob } from '../../src/shell/schedule-timer.js';

describe('everySeconds: the cron expressions a wall-clock-aligned timer runs as cron does', () => {
  const cases: readonly [string, number | null][] = [
    [DEFAULT_DRIFT_SCHEDULE, 30],
    ['* * * * * *', 1],
    ['*/1 * * * * *', 1],
    ['*/5 * * * * *', 5],
    ['  */15   * * * * * ', 15],
    ['*/7 * * * * *', null], // 7 does not divide 60: cron restarts the step at each minute
    ['*/45 * * * * *', null],
    ['*/0 * * * * *', null],
    ['*/60 * * * * *', null],
    ['0 * * * * *', null],
    ['*/30 * * * *', null],
    ['*/30 */2 * * * *', null],
    ['*/30 * * * * MON', null],
  ];
  for (const [expression, n] of cases) test(`${JSON.stringify(expression)}: ${n}`, () => assert.equal(everySeconds(expression), n));

  test('for each, the next times are the cron package\'s own', () => {
    for (const expression of ['*/30 * * * * *', '*/1 * * * * *', '*/5 * * * * *', '*/12 * * * * *', '*/20 * * * * *']) {
      const n = everySeconds(expression)!;
      const cron = new CronTime(expression);
      let at = Date.parse('2026-03-29T00:59:58.250Z'); // across a daylight-saving change in Europe
      for (let i = 0; i < 20; i++) {
        const ours = nextAligned(at, n);
        const theirs = cron.getNextDateFrom(new Date(at)).toMillis();
        assert.equal(ours, theirs, `${expression} after ${new Date(at).toISOString()}`);
        at = ours;
      }
    }
  });

  test('an aligned expression is valid without asking the cron package', () => assert.equal(scheduleProblem('*/5 * * * * *'), null));
});

describe('nextAligned', () => {
  test('the first multiple strictly after now, at a whole second', () => {
    assert.equal(nextAligned(30_000, 30), 60_000);
    assert.equal(nextAligned(29_999, 30), 30_000);
    assert.equal(nextAligned(1_500, 1), 2_000);
  });
});

describe('scheduleJob', () => {
  test('an aligned job ticks at whole seconds, skips a tick while the last one runs, reports what a tick throws, and stops', async () => {
    const ticks: number[] = [];
    const errors: unknown[] = [];
    let release: () => void = () => {};
    const job = scheduleJob('* * * * * *', () => {
      ticks.push(Date.now());
      if (ticks.length === 1) return new Promise<void>((r) => (release = r));
      if (ticks.length === 2) throw new Error('boom');
      return undefined;
    }, (e) => errors.push(e));
    job.start();
    await new Promise((r) => setTimeout(r, 2_300)); // two or three whole seconds pass: only the first ticks
    assert.equal(ticks.length, 1, 'the first tick is still running');
    assert.ok(ticks[0]! % 1000 < 500, `ticked at ${ticks[0]! % 1000} ms past the second`);
    release();
    // The next whole second ticks again (and throws); stopped at once after it, the job
    // ticks no more. Waiting for the tick, not a fixed time: a release just before a
    // second's end would otherwise see two more ticks in the same wait.
    const deadline = Date.now() + 3_000;
    while (ticks.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    job.stop();
    assert.equal(ticks.length, 2, 'one tick after the release');
    assert.ok(ticks[1]! % 1000 < 500, `ticked at ${ticks[1]! % 1000} ms past the second`);
    await new Promise((r) => setTimeout(r, 0));
    assert.deepEqual(errors.map((e) => (e as Error).message), ['boom']);
    await new Promise((r) => setTimeout(r, 1_100));
    assert.equal(ticks.length, 2, 'stopped');
  });

  test('any other expression runs on the cron package, and one it refuses throws before anything starts', () => {
    const job = scheduleJob('*/7 * * * * *', () => {}, () => {});
    job.stop();
    assert.throws(() => scheduleJob('61 * * * * *', () => {}, () => {}), /out of range/);
  });
});
