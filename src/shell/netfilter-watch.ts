import type { Logger } from 'pino';
import type { Backend } from '../core/family.js';
import { type MonitorTool, classifyMonitorLine, isNativeChange, parseMonitorLine, parseNftMonitorLine } from '../core/netfilter-event.js';
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
  /**
   * Called for every change that can have undone protection; the pass runner coalesces
   * them. The reason is `netfilter-native` for a change that may be in a native nftables
   * table (the agent then reads everything, nft included), else `netfilter-change`.
   */
  onChange(reason: string): void;
  /** The backend our rules are in. Only nf_tables reports changes as they happen. */
  readonly backend: Backend;
  readonly backoff?: MonitorBackoff;
  readonly clock?: Clock;
}

export type WatchLog = Pick<Logger, 'debug' | 'info' | 'warn'>;

interface MonitorCommand {
  readonly tool: MonitorTool;
  readonly file: string;
  readonly args: readonly string[];
  /** Said once when this command is not installed and the next one is tried. */
  readonly missing: string;
}

// In order of preference; the next is tried when one is not installed.
// - nft monitor (nftables) names every object exactly and flushes each line.
// - xtables-monitor (iptables, always there with the nft backend) writes with stdio, which
//   a pipe block-buffers in 1.8.9: without stdbuf a change reached us only once 4 KiB of
//   events had piled up. stdbuf (coreutils) execs it in place, so the pid is the monitor's.
const COMMANDS: readonly MonitorCommand[] = [
  { tool: 'nft-monitor', file: 'nft', args: ['monitor'], missing: 'nft (nftables) is not installed: watching through xtables-monitor' },
  { tool: 'xtables-monitor', file: 'stdbuf', args: ['-oL', 'xtables-monitor', '--event'], missing: 'stdbuf (coreutils) is not installed: xtables-monitor is read without it, and an old one (1.8.9) holds changes back until its output buffer fills' },
  { tool: 'xtables-monitor', file: 'xtables-monitor', args: ['--event'], missing: 'neither nft nor xtables-monitor is installed' },
];
// What stdbuf (like env and shells) exits with when it cannot run the command at all.
const NOT_FOUND = 127;
const NOT_EXECUTABLE = 126;
// A monitor that reported a change and then died was killed by that change (xtables-monitor
// 1.8.9 exits when it cannot print an IPv6 rule with a tcp match, our own among them): it is
// restarted at once, unless it died this young, which would make a tight loop.
const DIED_ON_EVENT_MIN_LIFE_MS = 100;

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
  let command = 0;
  let startedAt = 0;
  let reported = false;
  let reportedDown = false;

  const onLine = (text: string): void => {
    const tool = COMMANDS[command]!.tool;
    if ((tool === 'nft-monitor' ? parseNftMonitorLine(text) : parseMonitorLine(text)) !== null) reported = true;
    const change = classifyMonitorLine(text, tool);
    if (change === null) return;
    // Only nft monitor runs where nft is installed: without nft no read can look at a native
    // table, so xtables-monitor's lines (which cannot place a native rule, nor the partial
    // line it leaves when it dies on one of our IPv6 rules) ask for no full read.
    const native = tool === 'nft-monitor' && isNativeChange(change);
    log.debug({ event: 'netfilter-change', table: change.table, chain: change.chain, family: change.family, native }, 'netfilter changed');
    opts.onChange(native ? 'netfilter-native' : 'netfilter-change');
  };

  const onExit = (e: LineExit): void => {
    child = null;
    if (stopped) return;
    const lived = clock.now() - startedAt;
    if (e.error?.code === 'command-missing' && command < COMMANDS.length - 1) {
      const { tool, missing } = COMMANDS[command]!;
      command++;
      if (tool === 'nft-monitor') log.info({ event: 'netfilter-watch-fallback', tool: COMMANDS[command]!.tool }, missing);
      else log.warn({ event: 'netfilter-watch-unbuffered' }, missing);
      start(false);
      return;
    }
    if (reported && lived >= DIED_ON_EVENT_MIN_LIFE_MS) {
      log.debug({ event: 'netfilter-watch-died-on-event', code: e.code, stderr: e.stderr.split('\n').at(-1) }, 'the netfilter monitor died on a change it could not print; restarting it at once');
      start(true);
      return;
    }
    if (lived >= backoff.healthyAfterMs) {
      delay = backoff.initialMs;
      reportedDown = false;
    }
    const why = e.error !== null ? e.error.message : e.code === NOT_FOUND ? 'xtables-monitor not found: install it (Debian/Alpine package "iptables")' : e.code === NOT_EXECUTABLE ? 'xtables-monitor cannot be executed' : `exited (code ${e.code}, signal ${e.signal})${e.stderr === '' ? '' : `: ${e.stderr.split('\n').at(-1)}`}`;
    if (!reportedDown) {
      log.warn({ event: 'netfilter-watch-down', why, retryMs: delay }, `the netfilter monitor stopped (${why}); restarting it with backoff, the drift check still runs`);
      reportedDown = true;
    } else {
      log.debug({ event: 'netfilter-watch-down', why, retryMs: delay }, 'the netfilter monitor stopped again');
    }
    timer = clock.after(delay, () => {
      timer = null;
      start(true);
    });
    delay = Math.min(delay * 2, backoff.maxMs);
  };

  /** `again`: a monitor ran before, so whatever changed since it died went unseen. */
  function start(again: boolean): void {
    if (stopped) return;
    startedAt = clock.now();
    reported = false;
    const { tool, file, args } = COMMANDS[command]!;
    child = spawn(file, args, { line: onLine, exit: onExit });
    if (again) {
      log.debug({ event: 'netfilter-watch-restarted', tool, pid: child.pid }, 'netfilter monitor restarted');
      opts.onChange('netfilter-monitor-restarted');
    } else {
      log.info({ event: 'netfilter-watch-started', tool, pid: child.pid }, `watching netfilter changes (${tool === 'nft-monitor' ? 'nft monitor' : 'xtables-monitor'})`);
    }
  }

  start(false);
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
