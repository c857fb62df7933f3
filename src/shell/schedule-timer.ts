import { everySeconds, loadCron, nextAligned } from '../core/schedule.js';

/** A job run at the times a cron expression names. */
export interface ScheduledJob {
  start(): void;
  stop(): void;
}

/**
 * Runs `onTick` at each time `expression` (cron with seconds, local time) names; a tick
 * that comes while the last one's promise is still pending is skipped, and what a tick
 * throws goes to `onError`. `*\/N * * * * *` (the default drift check) runs on a timer
 * aligned to the wall clock; anything else on the cron package, loaded only then
 * (core/schedule `everySeconds` says why). Throws here, before anything starts, on an
 * expression the package refuses.
 */
export function scheduleJob(expression: string, onTick: () => void | Promise<void>, onError: (e: unknown) => void): ScheduledJob {
  const seconds = everySeconds(expression);
  if (seconds === null) {
    const job = loadCron().CronJob.from({ cronTime: expression, onTick, start: false, waitForCompletion: true, errorHandler: onError });
    return { start: () => job.start(), stop: () => void job.stop() };
  }
  let timer: NodeJS.Timeout | null = null;
  let running = false;
  let last = 0;
  const tick = (): void => {
    if (running) return;
    let result: void | Promise<void>;
    try {
      result = onTick();
    } catch (e) {
      onError(e);
      return;
    }
    if (result instanceof Promise) {
      running = true;
      result.catch(onError).finally(() => {
        running = false;
      });
    }
  };
  const arm = (): void => {
    // From the time just fired, not only the clock: a timer may fire a little before the
    // wall clock reaches it, and must not fire twice for one time.
    const at = nextAligned(Math.max(Date.now(), last), seconds);
    timer = setTimeout(() => {
      last = at;
      arm();
      tick();
    }, at - Date.now());
  };
  return {
    start: () => {
      if (timer === null) arm();
    },
    stop: () => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}
