import { createRequire } from 'node:module';
import type * as Cron from 'cron';

/** The agent's drift check when nothing else is configured: every 30 seconds. */
export const DEFAULT_DRIFT_SCHEDULE = '*/30 * * * * *';

/**
 * Why the cron package would refuse `expression` when the agent schedules it, or null.
 * Parsed by the package the agent runs it with, not by a look-alike: `61 * * * * *`
 * fails its range check, and `0 0 31 2 *` parses but never fires, which the package
 * only finds when asked for the next date (`CronJob.from` then throws at start).
 */
export function scheduleProblem(expression: string): string | null {
  // Known good (a unit test proves it with the package): the common case costs nothing.
  if (expression === DEFAULT_DRIFT_SCHEDULE || everySeconds(expression) !== null) return null;
  const { CronTime } = loadCron();
  let time: Cron.CronTime;
  try {
    time = new CronTime(expression);
  } catch (e) {
    return `is not a cron expression: ${firstLine(e)}`;
  }
  try {
    time.sendAt();
  } catch {
    return 'never fires (no date matches it within 8 years)';
  }
  return null;
}

/**
 * N when `expression` is `*\/N * * * * *` (or `* * * * * *`, N = 1) with N dividing 60:
 * it fires whenever the wall clock's seconds are a multiple of N, which a timer aligned
 * to the epoch does as cron does (every time zone's offset is whole minutes). The default
 * drift check is one, and the agent then needs neither the cron package nor luxon, whose
 * time-zone work loads ICU's data (about 10 MB of RSS for as long as the agent runs).
 * Null for anything else (the cron package runs it).
 */
export function everySeconds(expression: string): number | null {
  const fields = expression.trim().split(/\s+/);
  if (fields.length !== 6 || fields.slice(1).some((f) => f !== '*')) return null;
  if (fields[0] === '*') return 1;
  const m = /^\*\/([1-9][0-9]?)$/.exec(fields[0]!);
  const n = m === null ? NaN : Number(m[1]);
  return n < 60 && 60 % n === 0 ? n : null;
}

/** The first instant after `nowMs` (epoch ms) whose seconds are a multiple of `seconds`, at a whole second. */
export function nextAligned(nowMs: number, seconds: number): number {
  const step = seconds * 1000;
  return (Math.floor(nowMs / step) + 1) * step;
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!.trim();
}

/**
 * The cron package and luxon cost about 50 ms of start-up (load and first parse) and
 * every verb validates the configuration, so they are loaded on first need. In the
 * bundle esbuild turns this `require` into its own copy of the package, evaluated on
 * the first call; under tsx (the tests) an ES module has no `require`, so node resolves it.
 */
export function loadCron(): typeof Cron {
  return (typeof require === 'function' ? require('cron') : createRequire(import.meta.url)('cron')) as typeof Cron;
}
