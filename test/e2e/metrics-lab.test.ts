import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type TestContext, after, before, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { type Agent, type AgentOptions, LAB_IMAGE, MD_ADDR, labIptables, mustDocker, natSave, startAgent } from '../helpers/agent.js';
import { capability, requireCapabilities, skipWithout } from '../helpers/capability.js';
import { REPO, ensureBuilt } from '../helpers/cli.js';
import { type Lab, labAvailable, startLab } from '../helpers/lab.js';
import { type RunningPrometheus, httpGet, promToolsSkip, promtool, requireTools, startPrometheus } from '../helpers/prometheus.js';
import { waitFor } from '../helpers/swarm.js';

/**
 * The metrics of the real agent (`dist/cli.js run --metrics-listen`) in the lab, scraped
 * by Debian's Prometheus running in the lab's Docker host namespace (it reaches the
 * agent on that namespace's 127.0.0.1; this process asks it through a short node
 * process started there). Five hosts are recorded one after the other, each a real
 * agent against the lab's dockerd and tables:
 *
 *   protected  enforce mode, probe schedule on: every family 1, every probe blocked
 *   tampered   enforce mode; the nat IMDS-GUARD chain flushed five times, each repaired
 *   failing    the same agent, its iptables-nft-restore now refusing (below): passes fail
 *   exposed    report mode after `imds-guard remove`: families 0, the probe connects
 *   down       the agent stopped: up == 0
 *
 * promtool checks the text the agent served, and `promtool test rules` runs a rule test
 * built from the series Prometheus recorded (query_range): each alert of
 * deploy/prometheus/alerts.yml fires for its failing host and for no other, the
 * protected one included. Nothing leaves the machine: the lab has no route off it.
 */
const LAB_NAME = 'e2e-metrics';
const METRICS = '127.0.0.1:9469';
const PROBE_SCHEDULE = '*/2 * * * * *';
/** Seconds of each host's recording (Prometheus scrapes every second). */
const WINDOW_S = 6;
const RULES = join(REPO, 'deploy', 'prometheus', 'alerts.yml');
/** The series the shipped alerts read, recorded for each host. */
const ALERT_INPUTS = ['up', 'imds_guard_protected', 'imds_guard_last_successful_pass_timestamp_seconds', 'imds_guard_repairs_total', 'imds_guard_probe_blocked'];
/** Series that hold a unix time: rebased with the host's recording (see ruleTest). */
const TIMESTAMPS = new Set(['imds_guard_last_successful_pass_timestamp_seconds']);

const lab0 = labAvailable();
const needsLab = capability('the lab', lab0.ok, lab0.why ?? 'the lab cannot run here');
// Both are false under CI=true: `before` then fails on what is missing instead.
const skip = skipWithout(needsLab) || promToolsSkip();

let lab: Lab | undefined;
let prom: RunningPrometheus | undefined;
let agent: Agent | undefined;
let shimDir: string | undefined;
/** While this file exists, the shims in shimDir refuse (writeRefusingShims). */
let refuseFlag: string | undefined;
const recordings = new Map<string, Recording>();

interface Series {
  readonly labels: Readonly<Record<string, string>>;
  /** One value a second from the recording's start; null where Prometheus had none. */
  readonly values: readonly (number | null)[];
}

interface Recording {
  readonly host: string;
  /** Unix seconds of the first value. */
  readonly start: number;
  readonly series: readonly Series[];
}

function theLab(): Lab {
  assert.ok(lab, 'the lab did not come up');
  return lab;
}

function theProm(): RunningPrometheus {
  assert.ok(prom, 'prometheus did not start');
  return prom;
}

/** The real tool a shim hands over to, found where PATH (or Debian) keeps it. */
function realTool(name: string): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin']) {
    if (dir !== '' && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`${name} not found`);
}

/**
 * For the failing host, whose passes must fail: iptables-nft-restore (both families)
 * refuses while the flag file exists, with iptables' words and exit status for a
 * transaction the kernel refused, and is the real tool otherwise. Only the write is
 * replaced, only for that agent: with the nft backend there is no xtables lock to hold,
 * and nothing makes the kernel refuse one of our rules on demand. Reads, the lab's
 * tables and the drift the agent sees stay real.
 */
function writeRefusingShims(dir: string): string {
  const flag = join(dir, 'refuse');
  for (const tool of ['iptables-nft-restore', 'ip6tables-nft-restore']) {
    const body = `#!/bin/sh\nif [ -e '${flag}' ]; then echo '${tool}: line 2 failed (refused by test/e2e/metrics-lab.test.ts)' >&2; exit 1; fi\nexec '${realTool(tool)}' "$@"\n`;
    writeFileSync(join(dir, tool), body, { mode: 0o755 });
  }
  return flag;
}

before(async () => {
  if (skip !== false) return;
  requireCapabilities(needsLab);
  requireTools();
  ensureBuilt();
  shimDir = mkdtempSync(join(tmpdir(), 'igt-metrics-shim-'));
  refuseFlag = writeRefusingShims(shimDir);
  lab = await startLab(LAB_NAME);
  // The probe's way in: a running container on the user bridge.
  await mustDocker(lab, ['run', '-d', '--pull', 'never', '--name', 'web-1', '--network', 'lab-user', LAB_IMAGE, 'sleep', '3600']);
  prom = await startPrometheus(
    { global: { scrape_interval: '1s', scrape_timeout: '1s' }, scrape_configs: [{ job_name: 'imds-guard', static_configs: [{ targets: [METRICS] }] }] },
    { netns: lab.netns },
  );
});

after(async () => {
  await agent?.stop().catch(() => {});
  await prom?.stop();
  await lab?.down();
  if (shimDir !== undefined) rmSync(shimDir, { recursive: true, force: true });
});

/** The V8 setting the command (scripts/imds-guard.sh) gives `run` in every deployment form, given here as NODE_OPTIONS: the memory reported is the deployed agent's. */
const DEPLOYED_NODE_OPTIONS = /^AGENT_V8=(\S+)$/m.exec(readFileSync(join(REPO, 'scripts', 'imds-guard.sh'), 'utf8'))?.[1] ?? '';

async function startTheAgent(opts: AgentOptions): Promise<Agent> {
  await agent?.stop();
  assert.notEqual(DEPLOYED_NODE_OPTIONS, '', 'scripts/imds-guard.sh sets no AGENT_V8');
  agent = await startAgent(theLab(), { logLevel: 'info', ...opts, env: { NODE_OPTIONS: DEPLOYED_NODE_OPTIONS, ...opts.env }, extraArgs: ['--metrics-listen', METRICS, ...(opts.extraArgs ?? [])] });
  return agent;
}

/**
 * The agent's resident memory with metrics on, idle between drift checks (and probes):
 * reported, not judged, since `npm run bench` holds the idle target (under 80 MB). What
 * is checked is that the scraped process_resident_memory_bytes is this agent's memory at all.
 */
function reportMemory(t: TestContext, rec: Recording, a: Agent, what: string): void {
  const scraped = whole(rec, 'process_resident_memory_bytes');
  const maxMb = Math.max(...scraped) / 2 ** 20;
  const mem = a.memoryKb();
  const vmRssMb = mem.rss / 1024;
  t.diagnostic(`agent RSS, ${what}: scraped process_resident_memory_bytes max ${maxMb.toFixed(1)} MB over ${scraped.length} s; /proc VmRSS ${vmRssMb.toFixed(1)} MB, VmHWM ${(mem.peak / 1024).toFixed(1)} MB (NODE_OPTIONS=${DEPLOYED_NODE_OPTIONS}; target under 80 MB: npm run bench)`);
  assert.ok(maxMb > vmRssMb / 2 && maxMb < vmRssMb * 2, `scraped ${maxMb} MB vs VmRSS ${vmRssMb} MB of pid ${a.pid}`);
}

/** Waits until Prometheus' instant query `q` has a result that `ok` accepts (default: any). */
async function promUntil(q: string, ok: (values: string[]) => boolean = (v) => v.length > 0): Promise<void> {
  const p = theProm();
  await waitFor(`${q} in prometheus`, 30_000, async () => ((ok((await p.query(q)).map((s) => s.value[1]))) ? true : undefined)).catch((e: Error) => assert.fail(`${e.message}\n${p.log()}`));
}

/** The text the agent serves on /metrics, fetched in the lab's namespace; promtool check metrics must find nothing in it. */
async function checkServedText(): Promise<string> {
  const r = await httpGet(`http://${METRICS}/metrics`, theLab().netns);
  assert.equal(r.status, 200);
  // promtool passes empty input too: make sure it reads the real thing.
  assert.match(r.body, /^imds_guard_protected\{family="ipv4"\} [01]$/m);
  assert.match(r.body, /^process_resident_memory_bytes \d+$/m);
  const check = promtool(['check', 'metrics'], { input: r.body });
  assert.equal(check.code, 0, check.out);
  assert.equal(check.out, '');
  return r.body;
}

/**
 * Records `host`: from the next whole second, runs `during` (if any) and at least
 * WINDOW_S seconds in all, then reads back what Prometheus stored for the window, one
 * value a second (query_range, step 1s). The caller has made sure Prometheus already
 * sees this host's state, so no value in the window is the previous host's.
 */
async function record(host: string, during?: () => Promise<void>): Promise<Recording> {
  const start = Math.ceil(Date.now() / 1000);
  await sleep(start * 1000 - Date.now());
  await during?.();
  const end = Math.max(start + WINDOW_S - 1, Math.floor(Date.now() / 1000));
  // The scrape stamped `end` is stored about a second later.
  await sleep(Math.max(0, (end + 1.5) * 1000 - Date.now()));
  const q = `{job="imds-guard",__name__=~"${[...ALERT_INPUTS, 'process_resident_memory_bytes'].join('|')}"}`;
  const data = await theProm().api<{ result: { metric: Record<string, string>; values: [number, string][] }[] }>(`query_range?query=${encodeURIComponent(q)}&start=${start}&end=${end}&step=1`);
  const series = data.result.map((r) => {
    const values: (number | null)[] = Array.from({ length: end - start + 1 }, () => null);
    for (const [at, v] of r.values) values[Math.round(at - start)] = Number(v);
    return { labels: r.metric, values };
  });
  const rec = { host, start, series };
  recordings.set(host, rec);
  return rec;
}

function seriesOf(rec: Recording, name: string, labels: Record<string, string> = {}): Series[] {
  return rec.series.filter((s) => s.labels.__name__ === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The one series of that name and labels, every second of the window present. */
function whole(rec: Recording, name: string, labels: Record<string, string> = {}): number[] {
  const found = seriesOf(rec, name, labels);
  assert.equal(found.length, 1, `${rec.host}: ${name}${JSON.stringify(labels)}: ${found.length} series`);
  const values = found[0]!.values;
  assert.ok(values.every((v) => v !== null), `${rec.host}: ${name}${JSON.stringify(labels)} has gaps: ${JSON.stringify(values)}`);
  return values as number[];
}

const describeValues = (rec: Recording, name: string): string =>
  seriesOf(rec, name)
    .map((s) => `${JSON.stringify(s.labels)} ${JSON.stringify(s.values)}`)
    .join('\n');

test('protected: an enforcing agent with the probe schedule; promtool check metrics passes on what it served; every family 1 and every probe blocked, as recorded', { skip, timeout: 60_000 }, async (t) => {
  const a = await startTheAgent({ extraArgs: ['--probe-schedule', PROBE_SCHEDULE] });
  await a.waitFor('a scheduled probe', (l) => l.event === 'probed', { timeoutMs: 15_000 });
  await promUntil(`imds_guard_probe_blocked{network="lab-user",endpoint="${MD_ADDR}:80"} == 1`);
  const text = await checkServedText();
  assert.match(text, new RegExp(`^imds_guard_probe_blocked\\{network="lab-user",endpoint="${MD_ADDR.replaceAll('.', '\\.')}:80"\\} 1$`, 'm'));

  const rec = await record('protected');
  assert.ok(whole(rec, 'up').every((v) => v === 1));
  const families = seriesOf(rec, 'imds_guard_protected');
  assert.ok(families.some((s) => s.labels.family === 'ipv4'), describeValues(rec, 'imds_guard_protected'));
  for (const s of families) assert.ok(whole(rec, 'imds_guard_protected', { family: s.labels.family! }).every((v) => v === 1), describeValues(rec, 'imds_guard_protected'));
  assert.ok(whole(rec, 'imds_guard_probe_blocked', { network: 'lab-user', endpoint: `${MD_ADDR}:80` }).every((v) => v === 1));
  for (const s of seriesOf(rec, 'imds_guard_probe_blocked')) assert.ok(s.values.every((v) => v === 1), describeValues(rec, 'imds_guard_probe_blocked'));

  reportMemory(t, rec, a, 'enforce mode, --metrics-listen, a probe every 2 s');
});

const TAMPERINGS = 5;

test(`tampered: the nat IMDS-GUARD chain flushed ${TAMPERINGS} times, each repaired; the repairs counter records them while the families stay 1`, { skip, timeout: 60_000 }, async (t) => {
  const l = theLab();
  assert.ok(shimDir);
  // No probe schedule: a probe between a flush and its repair could connect, and this host
  // must not be the probe's. Its iptables-nft-restore is the shim, passing through until
  // the failing host's turn.
  const a = await startTheAgent({ env: { PATH: `${shimDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` } });
  // The protected host's probe series go stale when its agent stops.
  await promUntil('imds_guard_probe_blocked', (v) => v.length === 0);
  await promUntil('imds_guard_repairs_total == 0');
  // Scraped after its first pass, not only after its server came up.
  await promUntil('imds_guard_protected == 1', (v) => v.length >= 1);
  reportMemory(t, await record('tampered-idle'), a, 'enforce mode, --metrics-listen, no probe schedule');
  recordings.delete('tampered-idle');
  const rec = await record('tampered', async () => {
    for (let i = 0; i < TAMPERINGS; i++) {
      const from = a.mark();
      await labIptables(l, ['-t', 'nat', '-F', 'IMDS-GUARD']);
      await a.waitFor('the repair', (x) => x.event === 'repaired', { from });
      await sleep(500);
    }
    // The last repair scraped.
    await sleep(1500);
  });
  const repairs = whole(rec, 'imds_guard_repairs_total');
  t.diagnostic(`repairs_total over the window: ${JSON.stringify(repairs)}`);
  assert.equal(repairs.at(-1)! - repairs[0]!, TAMPERINGS);
  for (const s of seriesOf(rec, 'imds_guard_protected')) assert.ok(s.values.every((v) => v === 1), describeValues(rec, 'imds_guard_protected'));
  assert.deepEqual(seriesOf(rec, 'imds_guard_probe_blocked'), []);
});

test('failing: the same agent once its restores are refused: passes fail, the last successful pass time stands still, the last known gauges stay', { skip, timeout: 60_000 }, async (t) => {
  const l = theLab();
  const a = agent;
  const flag = refuseFlag;
  assert.ok(a && flag);
  writeFileSync(flag, '');
  const from = a.mark();
  await labIptables(l, ['-t', 'nat', '-F', 'IMDS-GUARD']);
  await a.waitFor('a failed pass', (x) => x.event === 'reconcile-failed', { from });
  // A scrape after the failure, so the window holds no value from before it.
  await sleep(1500);
  const rec = await record('failing');
  const failed = a.events('reconcile-failed', from);
  t.diagnostic(`${failed.length} failed passes; the first: ${JSON.stringify(failed[0]?.err)}`);
  assert.ok(failed.length >= 2, 'the passes kept failing');
  assert.ok(whole(rec, 'up').every((v) => v === 1));
  const last = whole(rec, 'imds_guard_last_successful_pass_timestamp_seconds');
  assert.equal(new Set(last).size, 1, JSON.stringify(last));
  assert.ok(last[0]! < rec.start, 'the last successful pass is older than the window');
  for (const s of seriesOf(rec, 'imds_guard_protected')) assert.ok(s.values.every((v) => v === 1), describeValues(rec, 'imds_guard_protected'));
  await a.stop();
  rmSync(flag);
});

test('exposed: after `imds-guard remove`, a report-mode agent with the probe schedule: a container reads the credentials, every family 0, the probe connects', { skip, timeout: 60_000 }, async (t) => {
  const l = theLab();
  const stopped = agent;
  assert.ok(stopped);
  const removed = await stopped.cli('remove');
  assert.equal(removed.code, 0, removed.stdout + removed.stderr);
  assert.doesNotMatch(await natSave(l), /IMDS-GUARD/);
  // Before the agent starts: its probe must not pick this short-lived container.
  const open = await l.probe('lab-user');
  assert.ok(open.gotCredentials, `the host is not exposed:\n${open.output}`);

  const a = await startTheAgent({ extraArgs: ['--mode', 'report', '--probe-schedule', PROBE_SCHEDULE] });
  await a.waitFor('a scheduled probe that connects', (x) => x.event === 'probe-exposed', { timeoutMs: 15_000 });
  await promUntil(`imds_guard_probe_blocked{network="lab-user",endpoint="${MD_ADDR}:80"} == 0`);
  await promUntil('imds_guard_protected{family="ipv4"} == 0');
  const text = await checkServedText();
  assert.match(text, /^imds_guard_protected\{family="ipv4"\} 0$/m);

  const rec = await record('exposed');
  reportMemory(t, rec, a, 'report mode, --metrics-listen, a probe every 2 s');
  for (const s of seriesOf(rec, 'imds_guard_protected')) assert.ok(s.values.every((v) => v === 0), describeValues(rec, 'imds_guard_protected'));
  assert.ok(whole(rec, 'imds_guard_probe_blocked', { network: 'lab-user', endpoint: `${MD_ADDR}:80` }).every((v) => v === 0));
  const passes = whole(rec, 'imds_guard_last_successful_pass_timestamp_seconds');
  assert.ok(passes.at(-1)! > passes[0]!, 'report-mode passes succeed');
});

test('down: the agent stopped: every scrape fails (up 0) and its series are gone', { skip, timeout: 60_000 }, async () => {
  await agent?.stop();
  agent = undefined;
  await promUntil('up{job="imds-guard"} == 0');
  await promUntil('imds_guard_protected', (v) => v.length === 0);
  const rec = await record('down');
  assert.ok(whole(rec, 'up').every((v) => v === 0));
  assert.deepEqual(rec.series.filter((s) => s.labels.__name__ !== 'up').map((s) => s.labels.__name__), []);
});

// ---------------------------------------------------------------------------------------
// The rule test built from the recordings.

/** Each recording is extended to this many seconds: past the latest eval time (15m). */
const LENGTH_S = 16 * 60;
/** 2.x range selectors include their start: at 15m the 15m window holds the samples at 0 s and 900 s, so increase() extrapolates nothing. */
const DRIFT_EVAL_S = 15 * 60;

const fmt = (v: number): string => String(Math.round(v * 1000) / 1000);

/**
 * One input series of the rule test: the host's recorded values, one a second, then
 * extended to LENGTH_S, since the alerts wait longer (for: 5m, "no pass for 5 minutes")
 * than a test can. The extension is what the host kept doing at its end: a value that
 * stood still stands still (the last value repeated at the scrape interval); a pass time
 * that moved keeps moving at its recorded pace. Unix times are rebased to the host's
 * first second (value minus start), as promtool's clock starts at 0: `time() - value`
 * is the same at every step as it was in the lab.
 */
function inputSeries(rec: Recording, s: Series): { series: string; values: string } {
  const { __name__: name, ...labels } = s.labels;
  assert.ok(name);
  // One instance per host: they were all the same target, one after the other.
  const named = { ...labels, instance: rec.host };
  const rebase = TIMESTAMPS.has(name) ? rec.start : 0;
  const vs = s.values.map((v) => (v === null ? null : v - rebase));
  const tokens = vs.map((v) => (v === null ? '_' : fmt(v)));
  const known = vs.map((v, i) => [i, v] as const).filter((x): x is readonly [number, number] => x[1] !== null);
  const more = LENGTH_S - vs.length;
  const [firstAt, first] = known[0] ?? [0, null];
  const [lastAt, last] = known.at(-1) ?? [0, null];
  if (last === null || first === null) tokens.push(`_x${more - 1}`);
  else {
    const pace = TIMESTAMPS.has(name) && last !== first ? (last - first) / (lastAt - firstAt) : 0;
    const next = last + pace * (vs.length - lastAt);
    tokens.push(pace === 0 ? `${fmt(last)}x${more - 1}` : `${fmt(next)}+${fmt(pace)}x${more - 1}`);
  }
  const selector = Object.entries(named)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(',');
  return { series: `${name}{${selector}}`, values: tokens.join(' ') };
}

/** The series of `rec` the alerts read, as promtool will see them at time `at` (seconds). */
function valueAt(rec: Recording, s: Series, at: number): number | null {
  return at < s.values.length ? (s.values[at] ?? null) : (s.values.at(-1) ?? null);
}

// Prometheus' template functions, as far as these alerts use them.
function humanizeDuration(v: number): string {
  assert.ok(v >= 60, `humanizeDuration(${v}): only minutes and more are rendered here`);
  const d = Math.trunc(v);
  const [days, hours, minutes, seconds] = [Math.trunc(d / 86400), Math.trunc(d / 3600) % 24, Math.trunc(d / 60) % 60, d % 60];
  if (days !== 0) return `${days}d ${hours}h ${minutes}m ${seconds}s`;
  if (hours !== 0) return `${hours}h ${minutes}m ${seconds}s`;
  return `${minutes}m ${seconds}s`;
}

function humanize(v: number): string {
  assert.ok(Number.isInteger(v) && v >= 0 && v < 1000, `humanize(${v}): only small whole numbers are rendered here`);
  return String(v);
}

function render(template: string, labels: Readonly<Record<string, string>>, value: number): string {
  const out = template
    .replace(/\{\{ if \$labels\.(\w+) \}\}(.*?)\{\{ end \}\}/g, (_m, name: string, body: string) => ((labels[name] ?? '') !== '' ? body : ''))
    .replace(/\{\{ \$labels\.(\w+) \}\}/g, (_m, name: string) => labels[name] ?? '')
    .replace(/\{\{ \$value \| humanizeDuration \}\}/g, () => humanizeDuration(value))
    .replace(/\{\{ \$value \| humanize \}\}/g, () => humanize(value));
  assert.doesNotMatch(out, /\{\{/, `a template this test cannot render: ${template}`);
  return out;
}

interface Rule {
  readonly alert: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}

/** A firing alert promtool must report: the series it comes from and the value of the expression. */
interface Firing {
  readonly rec: Recording;
  readonly series: Series;
  readonly value: number;
}

/** Per shipped alert: when to evaluate it, and which series of which host must fire then (every other host, the protected one first, stays quiet). */
const CASES: Record<string, { readonly quietAt?: number; readonly evalAt: number; readonly firing: (at: number) => Firing[] }> = {
  // for: 1m: pending (not listed) at 10 s, firing at 2m, for each family of the exposed host.
  ImdsGuardHostExposed: {
    quietAt: 10,
    evalAt: 120,
    firing: (at) => {
      const rec = recordings.get('exposed')!;
      return seriesOf(rec, 'imds_guard_protected')
        .filter((s) => valueAt(rec, s, at) === 0)
        .map((series) => ({ rec, series, value: 0 }));
    },
  },
  // Over 300 s since the last successful pass, for 1m: the failing host at 8m.
  ImdsGuardAgentNotPassing: {
    evalAt: 480,
    firing: (at) => {
      const rec = recordings.get('failing')!;
      const [series] = seriesOf(rec, 'imds_guard_last_successful_pass_timestamp_seconds');
      assert.ok(series);
      return [{ rec, series, value: at - Number(fmt(series.values.at(-1)! - rec.start)) }];
    },
  },
  // for: 5m: not yet at 1m, firing at 6m for the stopped agent.
  ImdsGuardAgentDown: {
    quietAt: 60,
    evalAt: 360,
    firing: () => {
      const rec = recordings.get('down')!;
      return seriesOf(rec, 'up').map((series) => ({ rec, series, value: 0 }));
    },
  },
  ImdsGuardDriftRepairedRepeatedly: {
    evalAt: DRIFT_EVAL_S,
    firing: () => {
      const rec = recordings.get('tampered')!;
      const [series] = seriesOf(rec, 'imds_guard_repairs_total');
      assert.ok(series);
      // The whole recording is inside the 15 minutes: increase() is last minus first.
      return [{ rec, series, value: series.values.at(-1)! - series.values[0]! }];
    },
  },
  ImdsGuardProbeConnected: {
    evalAt: 4,
    firing: (at) => {
      const rec = recordings.get('exposed')!;
      return seriesOf(rec, 'imds_guard_probe_blocked')
        .filter((s) => valueAt(rec, s, at) === 0)
        .map((series) => ({ rec, series, value: 0 }));
    },
  },
};

test('promtool test rules on the recorded series: each shipped alert fires for its failing host and stays quiet for every other, the protected one included', { skip, timeout: 60_000 }, (t) => {
  requireTools();
  assert.deepEqual([...recordings.keys()].sort(), ['down', 'exposed', 'failing', 'protected', 'tampered'], 'a host was not recorded');
  const rules = (parse(readFileSync(RULES, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
  // A new shipped alert needs a case here.
  assert.deepEqual(rules.map((r) => r.alert).sort(), Object.keys(CASES).sort());

  const expected = (rule: Rule, firing: Firing[]) =>
    firing.map(({ rec, series, value }) => {
      const { __name__: _name, ...own } = series.labels;
      const labels = { ...own, instance: rec.host };
      return {
        exp_labels: { ...labels, ...rule.labels },
        exp_annotations: Object.fromEntries(Object.entries(rule.annotations ?? {}).map(([k, v]) => [k, render(v, labels, value)])),
      };
    });
  const alertTests = rules.flatMap((rule) => {
    const c = CASES[rule.alert]!;
    const firing = c.firing(c.evalAt);
    assert.ok(firing.length > 0, `${rule.alert}: nothing recorded that should fire`);
    t.diagnostic(`${rule.alert} at ${c.evalAt}s: fires for ${firing.map((f) => `${f.rec.host} ${JSON.stringify(f.series.labels)} (${f.value})`).join(', ')}`);
    return [
      ...(c.quietAt === undefined ? [] : [{ eval_time: `${c.quietAt}s`, alertname: rule.alert, exp_alerts: [] }]),
      { eval_time: `${c.evalAt}s`, alertname: rule.alert, exp_alerts: expected(rule, firing) },
    ];
  });
  const input = [...recordings.values()].flatMap((rec) => rec.series.filter((s) => ALERT_INPUTS.includes(s.labels.__name__ ?? '')).map((s) => inputSeries(rec, s)));
  const file = {
    rule_files: [RULES],
    evaluation_interval: '1s',
    tests: [{ name: 'recorded in the lab: protected, tampered, failing, exposed and down hosts', interval: '1s', input_series: input, alert_rule_test: alertTests }],
  };
  const dir = mkdtempSync(join(tmpdir(), 'igt-metrics-rules-'));
  const path = join(dir, 'recorded.test.yml');
  writeFileSync(
    path,
    `# Built by test/e2e/metrics-lab.test.ts from what Prometheus recorded in the lab, one value a\n` +
      `# second per host; each series extended to ${LENGTH_S} s with what the host kept doing (see inputSeries).\n` +
      stringify(file, { lineWidth: 0 }),
  );
  const r = promtool(['test', 'rules', path]);
  assert.equal(r.code, 0, `${r.out}\n(the rule test is kept in ${path})`);
  assert.match(r.out, /SUCCESS/);
  rmSync(dir, { recursive: true, force: true });
});
