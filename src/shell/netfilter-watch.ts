import type { Logger } from 'pino';
import type { Backend } from '../core/family.js';
import { classifyMonitorLine } from '../core/netfilter-event.js';
import { type Clock, type Timer, realClock } from './clock.js';
import type { LineChild, LineExit, SpawnLines } from './exec.js';

export interface MonitorBackoff {
  readonly initialMs: number;
  readonly maxMs: number;
  /** A monitor that ran this long was healthy: its death restarts it after `initialMs` again, and is logged. */
  readonly healthyAfterMs: number;
}

export const DEFAULT_MONITOR_BACKOFF: MonitorBackoff = { initialMs: 500, maxMs: 30_000, healthyAfterMs: 10_000 };

export interface NetfilterWatchOptions {
  /** Called for every change that can have undone protection; the pass runner coalesces them. */
  onChange(reason: string): void;
  /** The backend our rules are in. Only nf_tables reports changes as they happen. */
  readonly backend: Backend;
  readonly backoff?: MonitorBackoff;
  readonly clock?: Clock;
}

export type WatchLog = Pick<Logger, 'debug' | 'info' | 'warn'>;

const MONITOR = 'xtables-monitor';
const MONITOR_ARGS = ['--event'];
// xtables-monitor 1.8.9 writes its events with stdio, which a pipe makes block-buffered:
// without stdbuf a change reaches us only once 4 KiB of events have piled up. stdbuf
// (coreutils) execs the monitor in place, so the pid we hold is the monitor's own.
const STDBUF = 'stdbuf';
const STDBUF_ARGS = ['-oL'];
// What stdbuf (like env and shells) exits with when it cannot run the command at all.
const NOT_FOUND = 127;
const NOT_EXECUTABLE = 126;

/**
 * Wakes the pass runner when the nf_tables ruleset changes in this network namespace
 * (the monitor is a child, so it watches the namespace the agent runs in): a flushed
 * chain, a deleted jump or an ACCEPT inserted above it is repaired within one pass
 * instead of at the next drift check. The monitor is restarted with capped backoff when
 * it dies, and its restart asks for a pass, since changes made meanwhile were not seen.
 * Legacy iptables has no change notification: there the drift check is the only trigger.
 */
export function watchNetfilter(spawn: SpawnLines, log: WatchLog, opts: NetfilterWatchOptions): { stop(): void } {
  if (opts.backend === 'legacy') {
    log.info({ event: 'netfilter-watch-unavailable', backend: 'legacy' }, 'legacy iptables reports no changes as they happen: tampering is found by the drift check only');
    return { stop() {} };
  }
  const backoff = opts.backoff ?? DEFAULT_MONITOR_BACKOFF;
  const clock = opts.clock ?? realClock;
  let stopped = false;
  let child: LineChild | null = null;
  let timer: Timer | null = null;
  let delay = backoff.initialMs;
  let useStdbuf = true;
  let startedAt = 0;
  let everStarted = false;
  let reportedDown = false;

  const onLine = (text: string): void => {
    const change = classifyMonitorLine(text);
    if (change === null) return;
    log.debug({ event: 'netfilter-change', table: change.table, chain: change.chain, family: change.family }, 'netfilter changed');
    opts.onChange('netfilter-change');
  };

  const onExit = (e: LineExit): void => {
    child = null;
    if (stopped) return;
    if (e.error?.code === 'command-missing' && useStdbuf) {
      useStdbuf = false;
      log.warn({ event: 'netfilter-watch-unbuffered' }, `${STDBUF} (coreutils) is not installed: ${MONITOR} is read without it, and an old one (1.8.9) may hold changes back until its output buffer fills`);
      start();
      return;
    }
    const lived = clock.now() - startedAt;
    if (lived >= backoff.healthyAfterMs) {
      delay = backoff.initialMs;
      reportedDown = false;
    }
    const why = e.error !== null ? e.error.message : e.code === NOT_FOUND ? `${MONITOR} not found: install it (Debian/Alpine package "iptables")` : e.code === NOT_EXECUTABLE ? `${MONITOR} cannot be executed` : `exited (code ${e.code}, signal ${e.signal})${e.stderr === '' ? '' : `: ${e.stderr.split('\n').at(-1)}`}`;
    if (!reportedDown) {
      log.warn({ event: 'netfilter-watch-down', why, retryMs: delay }, `the netfilter monitor stopped (${why}); restarting it with backoff, the drift check still runs`);
      reportedDown = true;
    } else {
      log.debug({ event: 'netfilter-watch-down', why, retryMs: delay }, 'the netfilter monitor stopped again');
    }
    timer = clock.after(delay, () => {
      timer = null;
      start();
    });
    delay = Math.min(delay * 2, backoff.maxMs);
  };

  function start(): void {
    if (stopped) return;
    startedAt = clock.now();
    child = useStdbuf ? spawn(STDBUF, [...STDBUF_ARGS, MONITOR, ...MONITOR_ARGS], { line: onLine, exit: onExit }) : spawn(MONITOR, MONITOR_ARGS, { line: onLine, exit: onExit });
    if (everStarted) {
      // Whatever changed while no monitor ran went unseen.
      log.debug({ event: 'netfilter-watch-restarted', pid: child?.pid }, 'netfilter monitor restarted');
      opts.onChange('netfilter-monitor-restarted');
    } else {
      log.info({ event: 'netfilter-watch-started', pid: child?.pid }, 'watching netfilter changes (xtables-monitor)');
    }
    everStarted = true;
  }

  start();
  return {
    stop() {
      stopped = true;
      timer?.cancel();
      timer = null;
      child?.kill('SIGTERM');
      child = null;
    },
  };
}
