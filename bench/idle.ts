import { createTestCgroup } from '../test/helpers/cgroup.js';
import { type LogLine, isPassLine, startNetnsAgent } from './daemon.js';
import type { BenchContext, BenchModule } from './module.js';
import { openNatLab } from './nat-lab.js';
import { cleanEnv, mustSucceed, reapedCpuMs, removeTempDir, tempDir } from './proc.js';
import { median, round } from './stats.js';
import { checkThenInsert } from './strategies.js';
import { renderTable } from './table.js';

/**
 * What the agent costs a host at idle: CPU seconds per hour on the nft backend with the
 * headline table (10k foreign nat rules), converged, no Docker (--no-docker: Docker's
 * events only add passes, and idle means none), beside a 30 s loop of check-then-insert.
 *
 * Measured on the real agent (`node dist/cli.js run`, CPU from /proc/<pid>/stat: its own
 * and that of the iptables processes it reaped), in three parts, then scaled to the
 * default schedule (a pass every 30 s: 120 an hour, of which one every 10 min, 6 an hour,
 * reads every table in full, the rest the deciding chains):
 * - the converged pass: an agent checking every second for WINDOW_S s;
 *   (each window opens SETTLE_MS after the agent started, past its start-up work);
 * - idle between passes: an agent whose check is due once a year, for IDLE_S s;
 * - a full read: the same agent after SIGHUP (a reload re-reads everything; the reload's
 *   own cost is counted in, so this errs high).
 */
// The agent spends some 100 ms of CPU in one go 5-10 s after it starts (start-up work,
// seen with no pass due); windows open after it, so it is not counted as idle.
const SETTLE_MS = 10_000;
const WINDOW_S = 20;
const IDLE_S = 15;
const RELOADS = 4;
const CHECK_RUNS = 20;
const PASSES_PER_HOUR = 120;
const FULL_PER_HOUR = 6;

export interface IdleResult {
  readonly rules: number;
  readonly cheapPass: { readonly passes: number; readonly cpuMsPerPass: number; readonly reads: Readonly<Record<string, number>>; readonly durationMsMedian: number };
  readonly idle: { readonly cpuMsPerSecond: number; readonly seconds: number };
  readonly fullPass: { readonly passes: number; readonly cpuMsPerPass: number; readonly durationMsMedian: number };
  readonly agentCpuSecondsPerHour: number;
  readonly checkThenInsert: { readonly runs: number; readonly cpuMsPerRun: number; readonly cpuSecondsPerHour: number };
  readonly ratioToCheckThenInsert: number;
  readonly idleRssMb: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const cpuOf = (c: { self: number; children: number }): number => c.self + c.children;

async function runIdle(ctx: BenchContext): Promise<IdleResult> {
  const lab = await openNatLab('nft', ctx.args.rules);
  const cgroup = createTestCgroup();
  const dir = tempDir('idle');
  try {
    const env = cleanEnv();
    mustSucceed('first apply', await lab.ns.run(process.execPath, [ctx.cli, 'apply', '--no-docker', '--boot-script', 'never', '--cgroup-parent', cgroup.path], { env }));
    const common = { cli: ctx.cli, ns: lab.ns, dir, cgroupParent: cgroup.path };

    ctx.progress(`idle: the agent checking every second for ${WINDOW_S} s`);
    const fast = await startNetnsAgent({ ...common, driftSchedule: '* * * * * *' });
    let cheap: IdleResult['cheapPass'];
    let idleRssKb: number;
    try {
      await sleep(SETTLE_MS);
      const from = fast.mark();
      const c0 = cpuOf(fast.cpuMs());
      await sleep(WINDOW_S * 1000);
      const c1 = cpuOf(fast.cpuMs());
      idleRssKb = fast.memoryKb().rss;
      const passes = fast.lines().slice(from).filter(isPassLine);
      cheap = { passes: passes.length, cpuMsPerPass: round((c1 - c0) / Math.max(1, passes.length)), reads: tally(passes), durationMsMedian: median(passes.map(durationOf)) };
    } finally {
      await fast.stop();
    }

    ctx.progress(`idle: an agent with nothing due for ${IDLE_S} s, then ${RELOADS} reloads (full reads)`);
    const slow = await startNetnsAgent({ ...common, driftSchedule: '0 0 0 1 1 *' });
    let idle: IdleResult['idle'];
    let full: IdleResult['fullPass'];
    try {
      await sleep(SETTLE_MS);
      const i0 = cpuOf(slow.cpuMs());
      const t0 = Date.now();
      await sleep(IDLE_S * 1000);
      const seconds = (Date.now() - t0) / 1000;
      const perSecond = (cpuOf(slow.cpuMs()) - i0) / seconds;
      idle = { cpuMsPerSecond: round(perSecond, 2), seconds: round(seconds) };
      const from = slow.mark();
      const r0 = cpuOf(slow.cpuMs());
      const rt = Date.now();
      for (let i = 0; i < RELOADS; i++) {
        const mark = slow.mark();
        slow.signal('SIGHUP');
        await slow.waitFor('the pass after a reload', (l) => isPassLine(l) && Array.isArray(l.reasons) && l.reasons.includes('reload'), { from: mark });
        await sleep(500);
      }
      const spent = cpuOf(slow.cpuMs()) - r0 - perSecond * ((Date.now() - rt) / 1000);
      const passes = slow.lines().slice(from).filter(isPassLine);
      full = { passes: passes.length, cpuMsPerPass: round(spent / RELOADS), durationMsMedian: median(passes.map(durationOf)) };
    } finally {
      await slow.stop();
    }

    // Check-then-insert on the same table: its six rules in place, then timed runs.
    ctx.progress(`idle: ${CHECK_RUNS} runs of check-then-insert`);
    const check = checkThenInsert(lab);
    await check.run(env);
    const k0 = reapedCpuMs();
    for (let i = 0; i < CHECK_RUNS; i++) await check.run(env);
    const perRun = (reapedCpuMs() - k0) / CHECK_RUNS;
    const checkPerHour = round((perRun * PASSES_PER_HOUR) / 1000, 2);

    // The fast agent's per-pass figure holds a second of idling; the hour has its own.
    const cheapNet = Math.max(0, cheap.cpuMsPerPass - idle.cpuMsPerSecond);
    const perHourMs = idle.cpuMsPerSecond * 3600 + cheapNet * (PASSES_PER_HOUR - FULL_PER_HOUR) + full.cpuMsPerPass * FULL_PER_HOUR;
    const agentPerHour = round(perHourMs / 1000, 2);
    return {
      rules: lab.foreign.ipv4,
      cheapPass: cheap,
      idle,
      fullPass: full,
      agentCpuSecondsPerHour: agentPerHour,
      checkThenInsert: { runs: CHECK_RUNS, cpuMsPerRun: round(perRun), cpuSecondsPerHour: checkPerHour },
      ratioToCheckThenInsert: round(agentPerHour / checkPerHour, 2),
      idleRssMb: round(idleRssKb / 1024),
    };
  } finally {
    lab.destroy();
    cgroup.destroy();
    removeTempDir(dir);
  }
}

const durationOf = (l: LogLine): number => (typeof l.durationMs === 'number' ? l.durationMs : Number.NaN);

function tally(passes: readonly LogLine[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of passes) {
    const k = typeof p.reads === 'string' ? p.reads : 'not logged';
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

function renderIdle(r: IdleResult): string {
  const reads = Object.entries(r.cheapPass.reads).map(([k, n]) => `${k} x${n}`).join(', ');
  const rows = [
    [`converged pass (checks every second for ${WINDOW_S} s: ${r.cheapPass.passes} passes, read ${reads})`, `${r.cheapPass.cpuMsPerPass} ms/pass`, `${r.cheapPass.durationMsMedian} ms`, `x ${PASSES_PER_HOUR - FULL_PER_HOUR}/h`],
    [`full read (after SIGHUP, reload included; ${r.fullPass.passes} passes)`, `${r.fullPass.cpuMsPerPass} ms/pass`, `${r.fullPass.durationMsMedian} ms`, `x ${FULL_PER_HOUR}/h`],
    [`idle between passes (${r.idle.seconds} s with nothing due)`, `${r.idle.cpuMsPerSecond} ms/s`, '', 'x 3600 s'],
    ['imds-guard agent, default schedule (every 30 s, full read every 10 min)', `${r.agentCpuSecondsPerHour} CPU s/h`, '', ''],
    [`check-then-insert every 30 s (6 iptables -C; ${r.checkThenInsert.cpuMsPerRun} ms CPU per run, mean of ${r.checkThenInsert.runs}; the loop's shell and sleep not counted)`, `${r.checkThenInsert.cpuSecondsPerHour} CPU s/h`, '', 'x 120/h'],
  ];
  return [
    `idle cost on the nft backend, ${r.rules} foreign IPv4 nat rules, converged, no Docker (CPU: the agent's own and its iptables processes')`,
    renderTable(['what', '>CPU', '>pass wall (agent log)', '>per hour'], rows),
    `agent / check-then-insert loop: ${r.ratioToCheckThenInsert}x; agent VmRSS at idle here: ${r.idleRssMb} MB`,
  ].join('\n');
}

export const idleModule: BenchModule = {
  name: 'idle',
  description: 'the agent at idle on the nft 10k-rule table: CPU seconds per hour, beside a 30 s check-then-insert loop',
  async run(ctx) {
    const result = await runIdle(ctx);
    return { result, text: renderIdle(result), targets: [] };
  },
};
