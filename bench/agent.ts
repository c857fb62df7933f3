import type { BenchModule } from './module.js';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { type Agent, type LogLine, natSave, startAgent, timedProbe } from '../test/helpers/agent.js';
import { ensureBuilt } from '../test/helpers/cli.js';
import { type Lab, startLab } from '../test/helpers/lab.js';
import { type Target, round } from './stats.js';
import { renderTable } from './table.js';

/**
 * The agent daemon (`imds-guard run`) against a real dockerd in a lab (scripts/lab):
 * how soon a new network's rule is in place, whether a container started right after
 * the network can slip through, how many iptables-restore (and ipset restore) runs a
 * burst of network events costs, and the agent's resident memory across bursts.
 *
 * Latency is measured from the agent's own log, not by polling: t0 is when the
 * Docker API answered `POST /networks/create` (the bench calls the API over the lab's
 * socket, so no CLI process exit is counted in the agent's favour), t1 is the `time`
 * of the agent's last IPv4 write of the pass that covered the network ("applied ipset
 * update" for a custom bridge joining the set, "applied nat transaction" when the set
 * rule had to be added too), which pino writes right after the tool returned, i.e. once
 * the protection is in the kernel. Both are the same wall
 * clock at ms resolution. Polling iptables-save would add its own 10-20 ms per read on
 * top and share the CPUs with the agent. "pass" latency is the agent's "covered" line,
 * the end of that pass (IPv6, conntrack, boot script, state file written).
 *
 * Restores per burst are the agent's "applied nat transaction" lines (one per
 * iptables-restore it runs) and its "applied ipset update" lines (one per ipset restore),
 * passes its "repaired" and debug "reconciled" lines. Events that arrive during a pass
 * fold into one more pass; dockerd creates networks one at a time, a pass or so apart,
 * so each custom bridge name tends to get a pass of its own: an ipset member insert,
 * while the nat table is written only when the first custom bridge appears and after
 * the last one goes.
 */
/** The NODE_OPTIONS systemd/imds-guard.service, openrc/imds-guard and the Dockerfile set. */
export const DEPLOYED_NODE_OPTIONS = '--max-semi-space-size=1';

export interface AgentBenchOptions {
  readonly quick?: boolean;
  readonly progress?: (line: string) => void;
}

const LAB = 'benchagent';
const BRIDGE_NAME = 'com.docker.network.bridge.name';
const EVENTS_PER_BURST = 50; // 25 creates + 25 removes

interface Sizes {
  readonly latencyNetworks: number;
  readonly raceRounds: number;
  readonly bursts: number;
}

// 10 bursts of 50 events: the 500 network events the memory figure is taken after.
const FULL: Sizes = { latencyNetworks: 50, raceRounds: 20, bursts: 10 };
const QUICK: Sizes = { latencyNetworks: 20, raceRounds: 5, bursts: 3 };

export async function runAgentBench(opts: AgentBenchOptions = {}): Promise<Record<string, unknown>> {
  const progress = opts.progress ?? ((l: string) => void process.stderr.write(`bench: agent: ${l}\n`));
  const sizes = opts.quick ? QUICK : FULL;
  const started = performance.now();
  const loadAtStart = loadavg();
  ensureBuilt();
  progress(`lab ${LAB} up`);
  const lab = await startLab(LAB);
  let agent: Agent | undefined;
  try {
    // Debug level only adds one line per converged pass ("reconciled"), which the pass
    // counts need; the default drift schedule, so the passes counted are the events'.
    // Started as every deployment form runs it (systemd unit, OpenRC script, image): with a
    // 1 MB young generation.
    agent = await startAgent(lab, { logLevel: 'debug', driftSchedule: '*/30 * * * * *', env: { NODE_OPTIONS: DEPLOYED_NODE_OPTIONS } });
    await sleep(3_000);
    const idle = agent.memoryKb();
    // What the first pass found on the bare host is not the bench's: count what comes after.
    const afterStart = agent.mark();
    progress(`idle RSS ${mb(idle.rss)} MB; latency over ${sizes.latencyNetworks} networks`);
    const latency = await measureLatency(lab, agent, sizes.latencyNetworks);
    const afterLatency = agent.memoryKb();
    progress(`race: ${sizes.raceRounds} create-then-run rounds`);
    const race = await measureRace(lab, agent, sizes.raceRounds);
    const afterRace = agent.memoryKb();
    progress(`${sizes.bursts} bursts of ${EVENTS_PER_BURST} network events with custom bridge names, 1 with Docker's names`);
    const cpuBeforeBursts = cpuSeconds(agent.pid);
    const bursts = await measureBursts(lab, agent, sizes.bursts, true);
    const burstCpu = cpuSeconds(agent.pid) - cpuBeforeBursts;
    const dockerNamed = await measureBursts(lab, agent, 1, false);
    const drift = agent.events('drift', afterStart).length;
    const end = agent.memoryKb();
    const result = {
      quick: opts.quick === true,
      durationSeconds: round((performance.now() - started) / 1000),
      loadavg: { start: loadAtStart.map((x) => round(x, 2)), end: loadavg().map((x) => round(x, 2)) },
      latency,
      race,
      memory: {
        idleRssMb: mb(idle.rss),
        afterBurstRssMb: bursts.map((b) => b.rssMb),
        peakRssMb: mb(end.peak),
        // VmHWM as each phase ended: where the peak was reached.
        peakAfterMb: { start: mb(idle.peak), latency: mb(afterLatency.peak), race: mb(afterRace.peak), bursts: mb(end.peak) },
        // File-backed pages are mostly the node binary's code; anonymous ones the JS heap and buffers.
        idle: { anonMb: mb(idle.anon), fileMb: mb(idle.file) },
        end: { anonMb: mb(end.anon), fileMb: mb(end.file) },
      },
      bursts,
      // The agent's user+system CPU time over the custom-named bursts (not its children's).
      cpuSecondsPerBurst: round(burstCpu / sizes.bursts, 2),
      dockerNamedBursts: dockerNamed,
      driftEventsDuringBench: drift,
    };
    const targets = targetsOf(result);
    process.stdout.write(`${render(result, targets)}\n`);
    return { ...result, targets };
  } finally {
    await agent?.stop().catch(() => {});
    progress(`lab ${LAB} down`);
    await lab.down();
  }
}

// ------------------------------------------------------------------ measurements

interface Quantiles {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly samples: readonly number[];
}

async function measureLatency(lab: Lab, agent: Agent, n: number): Promise<{ rule: Quantiles; pass: Quantiles }> {
  const rule: number[] = [];
  const pass: number[] = [];
  const names = Array.from({ length: n }, (_, i) => `bl${i}`);
  try {
    for (const [i, name] of names.entries()) {
      const from = agent.mark();
      await dockerApi(lab, 'POST', '/networks/create', createBody(name, `10.200.${i}.0/24`));
      const created = Date.now();
      const covered = await agent.waitFor(`covered ${name}`, (l) => l.event === 'covered' && l.interface === name, { from, timeoutMs: 10_000 });
      const since = agent.lines().slice(from);
      const applied = since.slice(0, since.indexOf(covered)).filter(isIpv4Write).at(-1);
      if (applied === undefined) throw new Error(`no IPv4 write logged for ${name}`);
      rule.push(logTime(applied) - created);
      pass.push(logTime(covered) - created);
    }
  } finally {
    await removeAll(lab, agent, names);
  }
  return { rule: quantiles(rule), pass: quantiles(pass) };
}

async function measureRace(lab: Lab, agent: Agent, rounds: number): Promise<{ rounds: number; leaked: number; refused: number; leaks: string[] }> {
  const names = Array.from({ length: rounds }, (_, i) => `br${i}`);
  const leaks: string[] = [];
  let refused = 0;
  try {
    for (const [i, name] of names.entries()) {
      await dockerApi(lab, 'POST', '/networks/create', createBody(name, `10.201.${i}.0/24`));
      const p = await timedProbe(lab, name);
      if (p.gotCredentials) leaks.push(`${name}: ${p.output.slice(0, 200)}`);
      if (p.refused) refused++;
    }
  } finally {
    await removeAll(lab, agent, names);
  }
  return { rounds, leaked: leaks.length, refused, leaks };
}

interface Burst {
  readonly burst: number;
  readonly events: number;
  /** iptables-restore runs (one "applied nat transaction" line each), IPv4 and IPv6 together. */
  readonly restores: number;
  readonly restoresIpv4: number;
  /** ipset restore runs (one "applied ipset update" line each): set members added or deleted. */
  readonly setWrites: number;
  /** Passes run, and of those the ones that wrote something. */
  readonly passes: number;
  readonly repairPasses: number;
  readonly seconds: number;
  readonly rssMb: number;
}

/**
 * Bursts of 25 network creates then 25 removes, each set sent at once. With `custom`
 * every network has its own bridge name, so every one needs a rule of its own (the worst
 * case); without, Docker names the bridges br-<id>, which br-+ already covers.
 */
async function measureBursts(lab: Lab, agent: Agent, count: number, custom: boolean): Promise<Burst[]> {
  const out: Burst[] = [];
  const half = EVENTS_PER_BURST / 2;
  for (let b = 1; b <= count; b++) {
    const names = Array.from({ length: half }, (_, i) => `b${custom ? 'c' : 'd'}${b}n${i}`);
    const from = agent.mark();
    const t0 = performance.now();
    await Promise.all(names.map((name, i) => dockerApi(lab, 'POST', '/networks/create', createBody(name, `10.210.${i}.0/24`, custom))));
    await Promise.all(names.map((name) => dockerApi(lab, 'DELETE', `/networks/${name}`)));
    await settle(lab, agent, names);
    const lines = agent.lines().slice(from);
    const applied = lines.filter((l) => l.msg === 'applied nat transaction');
    out.push({
      burst: b,
      events: EVENTS_PER_BURST,
      restores: applied.length,
      restoresIpv4: applied.filter((l) => l.family === 'ipv4').length,
      setWrites: lines.filter((l) => l.msg === 'applied ipset update').length,
      passes: lines.filter((l) => l.event === 'repaired' || l.event === 'reconciled').length,
      repairPasses: lines.filter((l) => l.event === 'repaired').length,
      seconds: round((performance.now() - t0) / 1000, 2),
      rssMb: mb(agent.rssKb()),
    });
  }
  return out;
}

/** Waits until no rule or set member names `names` and the agent has logged nothing for 0.6 s (a pass takes 0.1-0.3 s here). */
async function settle(lab: Lab, agent: Agent, names: readonly string[]): Promise<void> {
  const deadline = performance.now() + 60_000;
  let seen = agent.mark();
  let quietSince = performance.now();
  for (;;) {
    if (agent.mark() !== seen) {
      seen = agent.mark();
      quietSince = performance.now();
    }
    if (performance.now() - quietSince >= 600) {
      // The set is gone with the per-bridge model (test/helpers no longer reads it); only rules can name a bridge.
      const save = await natSave(lab);
      if (!names.some((n) => save.includes(` -i ${n} `))) return;
    }
    if (performance.now() > deadline) throw new Error(`the agent did not settle after removing ${names.join(', ')}`);
    await sleep(100);
  }
}

async function removeAll(lab: Lab, agent: Agent, names: readonly string[]): Promise<void> {
  await Promise.all(names.map((n) => dockerApi(lab, 'DELETE', `/networks/${n}`).catch(() => {})));
  await settle(lab, agent, names);
}

// ------------------------------------------------------------------ Docker API

function createBody(name: string, subnet: string, customBridge = true): Record<string, unknown> {
  // An explicit subnet each: Docker's default pools hold only ~30 bridge networks.
  return { Name: name, Driver: 'bridge', CheckDuplicate: true, Options: customBridge ? { [BRIDGE_NAME]: name } : {}, IPAM: { Config: [{ Subnet: subnet }] } };
}

/** One call to the lab's Docker API over its unix socket; rejects unless it answers 2xx. */
function dockerApi(lab: Lab, method: string, path: string, body?: unknown): Promise<string> {
  const socketPath = new URL(lab.dockerHost).pathname;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method, headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) resolve(text);
        else reject(new Error(`docker API ${method} ${path}: ${status} ${text.trim()}`));
      });
    });
    req.on('error', reject);
    req.setTimeout(60_000, () => req.destroy(new Error(`docker API ${method} ${path}: timed out`)));
    req.end(payload);
  });
}

// ------------------------------------------------------------------ figures

function quantiles(xs: readonly number[]): Quantiles {
  const s = [...xs].sort((a, b) => a - b);
  // Nearest rank: below 100 samples the p99 is the largest one.
  const rank = (p: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN;
  return { p50: rank(50), p99: rank(99), max: s.at(-1) ?? Number.NaN, samples: xs };
}

/** utime + stime of a process, in seconds (clock ticks are 1/100 s on Linux). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const logTime = (l: LogLine): number => Date.parse(String(l.time));
const isIpv4Write = (l: LogLine): boolean =>
  (l.msg === 'applied nat transaction' && l.family === 'ipv4') || (l.msg === 'applied ipset update' && Array.isArray(l.families) && l.families.includes('ipv4'));
const mb = (kb: number): number => round(kb / 1024, 1);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Result {
  readonly latency: { rule: Quantiles; pass: Quantiles };
  readonly race: { rounds: number; leaked: number };
  readonly memory: { idleRssMb: number; afterBurstRssMb: number[]; peakRssMb: number; peakAfterMb: { start: number; latency: number; race: number; bursts: number }; idle: { anonMb: number; fileMb: number }; end: { anonMb: number; fileMb: number } };
  readonly bursts: Burst[];
  readonly cpuSecondsPerBurst: number;
  readonly dockerNamedBursts: Burst[];
  readonly driftEventsDuringBench: number;
}

const MAX_RSS_MB = 80;
const MAX_GROWTH_MB = 5;
const MAX_RESTORES_PER_BURST = 10;

function targetsOf(r: Result): Target[] {
  const rss = r.memory.afterBurstRssMb;
  const growth = rss.length < 2 ? 0 : round(rss.at(-1)! - rss[0]!, 1);
  const worstRestores = Math.max(...r.bursts.map((b) => b.restores));
  const worstSetWrites = Math.max(...r.bursts.map((b) => b.setWrites));
  return [
    { id: 'agent.latency-p99', what: 'network create -> IPv4 rule in place, p99', target: '< 100 ms', value: `${r.latency.rule.p99} ms (p50 ${r.latency.rule.p50})`, met: r.latency.rule.p99 < 100 },
    { id: 'agent.race', what: 'create-then-run probes that got through', target: '0', value: `${r.race.leaked} of ${r.race.rounds}`, met: r.race.leaked === 0 },
    { id: 'agent.rss', what: 'agent VmRSS, peak (idle and after bursts)', target: `< ${MAX_RSS_MB} MB`, value: `${r.memory.peakRssMb} MB (idle ${r.memory.idleRssMb})`, met: r.memory.peakRssMb < MAX_RSS_MB },
    { id: 'agent.rss-growth', what: `VmRSS after the last burst minus after the first`, target: `< ${MAX_GROWTH_MB} MB`, value: `${growth} MB`, met: growth < MAX_GROWTH_MB },
    { id: 'agent.restores-per-burst', what: `iptables-restore runs per burst of ${EVENTS_PER_BURST} events, worst`, target: `<= ${MAX_RESTORES_PER_BURST}`, value: `${worstRestores} (and ${worstSetWrites} ipset restores: member inserts and deletes, no nat rewrite)`, met: worstRestores <= MAX_RESTORES_PER_BURST },
    { id: 'agent.no-drift', what: 'drift events logged while Docker alone changed networks', target: '0', value: String(r.driftEventsDuringBench), met: r.driftEventsDuringBench === 0 },
  ];
}

function render(r: Result & { loadavg: { start: number[]; end: number[] }; durationSeconds: number }, targets: readonly Target[]): string {
  const q = (x: Quantiles): string[] => [String(x.samples.length), String(x.p50), String(x.p99), String(x.max)];
  const latency = renderTable(
    ['agent: from the API answering network create (custom bridge name) to', '>networks', '>p50 ms', '>p99 ms', '>max ms'],
    [
      ['IPv4 protection in place (its last IPv4 write: ipset update or nat transaction)', ...q(r.latency.rule)],
      ['the end of that pass ("covered": IPv6, conntrack, boot script done)', ...q(r.latency.pass)],
    ],
  );
  const row = (label: string, b: Burst): string[] => [label, String(b.restores), String(b.restoresIpv4), String(b.setWrites), String(b.passes), String(b.repairPasses), b.seconds.toFixed(2), b.rssMb.toFixed(1)];
  const bursts = renderTable(
    ['burst of 50 events (25 creates, then 25 removes, each set at once)', '>iptables-restores', '>of which IPv4', '>ipset restores', '>passes', '>that wrote', '>seconds', '>VmRSS MB after'],
    [...r.bursts.map((b) => row(`${b.burst}: custom bridge names`, b)), ...r.dockerNamedBursts.map((b) => row(`${r.bursts.length + b.burst}: Docker's br-<id> names`, b))],
  );
  const targetTable = renderTable(['target', 'wanted', 'measured', 'verdict'], targets.map((t) => [t.what, t.target, t.value, t.met ? 'target met' : 'target missed']));
  return [
    `agent daemon in a Docker lab (${r.durationSeconds} s; load average ${r.loadavg.start.join(' ')} at start, ${r.loadavg.end.join(' ')} at end)`,
    latency,
    '',
    `create-then-run race: ${r.race.leaked} of ${r.race.rounds} containers got the credentials`,
    `memory: VmRSS idle ${r.memory.idleRssMb} MB (anonymous ${r.memory.idle.anonMb}, file-backed ${r.memory.idle.fileMb}), peak ${r.memory.peakRssMb} MB (high-water mark after start-up ${r.memory.peakAfterMb.start}, the latency runs ${r.memory.peakAfterMb.latency}, the race ${r.memory.peakAfterMb.race}, the bursts ${r.memory.peakAfterMb.bursts}), after the last burst anonymous ${r.memory.end.anonMb} + file-backed ${r.memory.end.fileMb}`,
    '',
    bursts,
    `agent CPU time per custom-named burst: ${r.cpuSecondsPerBurst} s (its own, not iptables')`,
    '',
    targetTable,
  ].join('\n');
}

/** The agent part of `npm run bench` (skipped with --only engine). */
export const benchModule: BenchModule = {
  name: 'agent',
  description: 'the agent daemon in the Docker lab: create-to-rule latency, create-then-run race, memory across bursts, restores per burst',
  async run() {
    const result = await runAgentBench({});
    const targets = (result.targets ?? []) as Target[];
    return { result, text: '', targets };
  },
};
