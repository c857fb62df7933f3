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
  if (expression === DEFAULT_DRIFT_SCHEDULE) return null;
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

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!.trim();
}

/**
 * The cron package and luxon cost about 50 ms of start-up (load and first parse) and
 * every verb validates the configuration, so they are loaded on first need. In the
 * bundle esbuild turns this `require` into its own copy of the package, evaluated on
 * the first call; under tsx (the tests) an ES module has no `require`, so node resolves it.
 */
function loadCron(): typeof Cron {
  return (typeof require === 'function' ? require('cron') : createRequire(import.meta.url)('cron')) as typeof Cron;
}
