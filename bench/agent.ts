import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { type Agent, CRED_MARKER, CRED_REQUEST, LAB_IMAGE, MD_ADDR, mustDocker, startAgent, timedProbe } from '../test/helpers/agent.js';
import { ensureBuilt } from '../test/helpers/cli.js';
import { type Lab, startLab } from '../test/helpers/lab.js';
import { DEPLOYED_NODE_OPTIONS } from './agent-pass.js';
import type { BenchModule } from './module.js';
import { processCpuMs } from './proc.js';
import { type Target, median, round } from './stats.js';
import { renderTable } from './table.js';

/**
 * The agent daemon (`imds-guard run`) against a real dockerd in a lab (scripts/lab).
 * In the coverage model a network is covered before it exists (the nat catch-all names
 * no interface), so a network's events write nothing; what is measured is whether that
 * holds for a container's very first packet, with a control that makes the figure mean
 * something: the same probe without the agent must read the metadata, or it is void.
 *
 * - first probe: create a network, then at once `docker run --rm` a container on it that
 *   asks for the credentials; N networks without the agent (control), N with it.
 * - race: a container already running (parked on an internal network, whose traffic
 *   Docker drops) polls its routing table until the default route goes through a second
 *   interface; the bench creates a fresh network and connects the container to it; the
 *   container then asks for the credentials at once. 20 rounds without the agent
 *   (control), 20 with it; leaks counted. (A container on `--network none` cannot be
 *   connected to another network.)
 * - memory: VmRSS at idle, and the peak during 500 network events (VmHWM reset through
 *   /proc/<pid>/clear_refs just before, and RSS sampled every 50 ms), in bursts of 25
 *   creates then 25 removes, back to back; the passes and restores they cost.
 */
/** The parts of the agent module: `probes` (first probe), `race`, `memory` (idle RSS and the 500 network events). */
export type AgentPart = 'probes' | 'race' | 'memory';
export const AGENT_PARTS: readonly AgentPart[] = ['probes', 'race', 'memory'];

export interface AgentBenchOptions {
  readonly quick?: boolean;
  /** The parts to run (default all); the memory part alone measures idle RSS and the events' restores. */
  readonly parts?: readonly AgentPart[];
  readonly progress?: (line: string) => void;
}

const LAB = 'benchagent';
const EVENTS_PER_BURST = 50; // 25 creates + 25 removes
const MAX_IDLE_RSS_MB = 70;
const MAX_PEAK_RSS_MB = 80;

interface Sizes {
  readonly firstProbes: number;
  readonly raceRounds: number;
  readonly bursts: number;
}

// 10 bursts of 50 events: the 500 network events of the memory figure.
const FULL: Sizes = { firstProbes: 10, raceRounds: 20, bursts: 10 };
const QUICK: Sizes = { firstProbes: 4, raceRounds: 5, bursts: 3 };

export async function runAgentBench(opts: AgentBenchOptions = {}): Promise<{ result: Result; text: string; targets: Target[] }> {
  const progress = opts.progress ?? ((l: string) => void process.stderr.write(`bench: agent: ${l}\n`));
  const sizes = opts.quick ? QUICK : FULL;
  const started = performance.now();
  const loadAtStart = loadavg();
  ensureBuilt();
  progress(`lab ${LAB} up`);
  const lab = await startLab(LAB);
  let agent: Agent | undefined;
  const parts = new Set(opts.parts ?? AGENT_PARTS);
  try {
    const park = parts.has('race') ? await createNetwork(lab, 'benchpark', '10.202.0.0/24', true) : '';
    progress(`control, no agent: ${parts.has('probes') ? sizes.firstProbes : 0} first probes, ${parts.has('race') ? sizes.raceRounds : 0} race rounds`);
    const firstControl = parts.has('probes') ? await firstProbes(lab, null, 'fc', 0, sizes.firstProbes) : null;
    const raceControl = parts.has('race') ? await raceRounds(lab, null, park, 'rc', 0, sizes.raceRounds) : null;

    // The deployed NODE_OPTIONS and the default drift schedule: the passes counted below are the events'.
    agent = await startAgent(lab, { logLevel: 'debug', driftSchedule: '*/30 * * * * *', env: { NODE_OPTIONS: DEPLOYED_NODE_OPTIONS }, extraArgs: ['--cgroup-parent', lab.cgroupParent] });
    const afterStart = agent.mark();
    await sleep(3_000);
    const idle = agent.memoryKb();
    progress(`with the agent (idle VmRSS ${mb(idle.rss)} MB): ${firstControl === null ? 0 : sizes.firstProbes} first probes, ${raceControl === null ? 0 : sizes.raceRounds} race rounds`);
    const first = firstControl === null ? null : await firstProbes(lab, agent, 'fa', 100, sizes.firstProbes);
    const race = raceControl === null ? null : await raceRounds(lab, agent, park, 'ra', 100, sizes.raceRounds);
    const burst = parts.has('memory') ? (progress(`${sizes.bursts * EVENTS_PER_BURST} network events in bursts of ${EVENTS_PER_BURST}`), await measureBurst(lab, agent, sizes.bursts)) : null;
    const drift = agent.events('drift', afterStart).length;
    const result: Result = {
      quick: opts.quick === true,
      parts: AGENT_PARTS.filter((p) => parts.has(p)),
      durationSeconds: round((performance.now() - started) / 1000),
      loadavg: { start: loadAtStart.map((x) => round(x, 2)), end: loadavg().map((x) => round(x, 2)) },
      firstProbe: firstControl === null || first === null ? null : { control: firstControl, agent: first },
      race: raceControl === null || race === null ? null : { control: raceControl, agent: race },
      memory: { idleRssMb: mb(idle.rss), idleAnonMb: mb(idle.anon), idleFileMb: mb(idle.file), startupPeakMb: mb(idle.peak), burstPeakMb: burst?.peakMb ?? null },
      burst,
      driftEventsDuringBench: drift,
    };
    const targets = targetsOf(result);
    return { result, text: render(result), targets };
  } finally {
    await agent?.stop().catch(() => {});
    progress(`lab ${LAB} down`);
    await lab.down();
  }
}

// ------------------------------------------------------------------ first probe

interface FirstProbes {
  readonly rounds: number;
  readonly gotCredentials: number;
  readonly refused: number;
  /** API answering the create -> the probe container's attempt done (docker run included). */
  readonly createToResultMs: readonly number[];
  /** The attempt itself, inside the container (10 ms resolution). */
  readonly innerMs: readonly number[];
  /** API answering the create -> the agent's `covered` line for it (with the agent only). */
  readonly noticedMs: readonly number[];
}

async function firstProbes(lab: Lab, agent: Agent | null, prefix: string, base: number, n: number): Promise<FirstProbes> {
  const out = { rounds: n, gotCredentials: 0, refused: 0, createToResultMs: [] as number[], innerMs: [] as number[], noticedMs: [] as number[] };
  for (let i = 0; i < n; i++) {
    const name = `${prefix}${i}`;
    const from = agent?.mark() ?? 0;
    await createNetwork(lab, name, `10.200.${base + i}.0/24`);
    const created = Date.now();
    try {
      const p = await timedProbe(lab, name);
      out.createToResultMs.push(Date.now() - created);
      out.innerMs.push(p.innerMs);
      if (p.gotCredentials) out.gotCredentials++;
      else if (p.refused) out.refused++;
      if (agent !== null) {
        const covered = await agent.waitFor(`covered ${name}`, (l) => l.event === 'covered' && l.network === name, { from, timeoutMs: 10_000 }).catch(() => null);
        if (covered !== null) out.noticedMs.push(Date.parse(String(covered.time)) - created);
      }
    } finally {
      await dockerApi(lab, 'DELETE', `/networks/${name}`).catch(() => {});
    }
  }
  return out;
}

// ------------------------------------------------------------------ race

// The parked container has a default route through its internal network (Docker 20.10
// gives internal networks a gateway too; their traffic is dropped in FORWARD), so it
// waits, with shell builtins only, until the default route goes through eth1, the fresh
// network's interface, then sends its request at once.
const RACE_SCRIPT =
  'i=0; r=0; while [ $r = 0 ] && [ $i -lt 2000000 ]; do while read -r ifc dst rest; do if [ "$ifc" = eth1 ] && [ "$dst" = 00000000 ]; then r=1; fi; done </proc/net/route; i=$((i+1)); done; ' +
  `echo "route_polls=$i"; printf '${CRED_REQUEST}' | nc -w 3 ${MD_ADDR} 80 2>&1`;

interface RaceRounds {
  readonly rounds: number;
  readonly gotCredentials: number;
  readonly refused: number;
  /** Rounds whose container never got a route, or said something else. */
  readonly other: number;
  /** Reads of the routing table before the route through the fresh network was there, per round. */
  readonly routePolls: readonly number[];
  readonly leaks: readonly string[];
  /** The output of the first few "other" rounds, to say what happened. */
  readonly otherSamples: readonly string[];
}

async function raceRounds(lab: Lab, agent: Agent | null, park: string, prefix: string, base: number, n: number): Promise<RaceRounds> {
  const out = { rounds: n, gotCredentials: 0, refused: 0, other: 0, routePolls: [] as number[], leaks: [] as string[], otherSamples: [] as string[] };
  for (let i = 0; i < n; i++) {
    const name = `${prefix}${i}`;
    const id = await mustDocker(lab, ['run', '-d', '--pull', 'never', '--network', park, LAB_IMAGE, 'sh', '-c', RACE_SCRIPT]);
    try {
      await createNetwork(lab, name, `10.201.${base + i}.0/24`);
      await dockerApi(lab, 'POST', `/networks/${name}/connect`, { Container: id });
      await mustDocker(lab, ['wait', id], 60_000);
      const logs = await lab.docker(['logs', id]);
      const text = logs.stdout + logs.stderr;
      const polls = /route_polls=(\d+)/.exec(text)?.[1];
      if (polls !== undefined) out.routePolls.push(Number(polls));
      if (text.includes(CRED_MARKER)) {
        out.gotCredentials++;
        if (agent !== null) out.leaks.push(`${name}: ${text.slice(0, 200)}`);
      } else if (/Connection refused/.test(text)) out.refused++;
      else {
        out.other++;
        if (out.otherSamples.length < 3) out.otherSamples.push(`${name}: ${text.trim().slice(0, 200)}`);
      }
    } finally {
      await lab.docker(['rm', '-f', id]);
      await dockerApi(lab, 'DELETE', `/networks/${name}`).catch(() => {});
    }
  }
  return out;
}

// ------------------------------------------------------------------ memory and bursts

interface BurstResult {
  readonly events: number;
  readonly seconds: number;
  readonly peakMb: number;
  readonly sampledPeakMb: number;
  readonly afterMb: number;
  /** iptables-restore transactions the agent ran ("applied transaction" lines). */
  readonly restores: number;
  /** Those restores by family/table. */
  readonly restoreTables: Readonly<Record<string, number>>;
  /** Drift the agent logged during the events, by kind and chain. */
  readonly driftKinds: Readonly<Record<string, number>>;
  readonly passes: number;
  readonly passReads: Readonly<Record<string, number>>;
  readonly passMsMedian: number;
  readonly agentCpuSeconds: number;
}

async function measureBurst(lab: Lab, agent: Agent, bursts: number): Promise<BurstResult> {
  // "5" resets VmHWM to the current RSS (proc(5)): the peak read after is the burst's.
  writeFileSync(`/proc/${agent.pid}/clear_refs`, '5');
  let sampled = agent.rssKb();
  const sampler = setInterval(() => {
    try {
      sampled = Math.max(sampled, agent.rssKb());
    } catch {
      // the agent is gone; the burst below fails on its own
    }
  }, 50);
  const from = agent.mark();
  const cpu0 = cpuSeconds(agent.pid);
  const t0 = performance.now();
  try {
    const half = EVENTS_PER_BURST / 2;
    for (let b = 0; b < bursts; b++) {
      const names = Array.from({ length: half }, (_, i) => `bb${b}n${i}`);
      await Promise.all(names.map((name, i) => createNetwork(lab, name, `10.210.${i}.0/24`)));
      await Promise.all(names.map((name) => dockerApi(lab, 'DELETE', `/networks/${name}`)));
    }
    await quiet(agent, 1_000);
  } finally {
    clearInterval(sampler);
  }
  const seconds = (performance.now() - t0) / 1000;
  const lines = agent.lines().slice(from);
  const passes = lines.filter((l) => l.event === 'reconciled' || l.event === 'repaired');
  const passReads = tally(passes.map((p) => String(p.reads ?? 'not logged')));
  const applied = lines.filter((l) => l.msg === 'applied transaction');
  const mem = agent.memoryKb();
  return {
    events: bursts * EVENTS_PER_BURST,
    seconds: round(seconds, 1),
    peakMb: mb(Math.max(mem.peak, sampled)),
    sampledPeakMb: mb(sampled),
    afterMb: mb(mem.rss),
    restores: applied.length,
    restoreTables: tally(applied.map((l) => `${String(l.family)}/${String(l.table)}`)),
    driftKinds: tally(lines.filter((l) => l.event === 'drift').map((l) => `${String(l.kind)}${l.chain === undefined ? '' : ` (${String(l.table)} ${String(l.chain)})`}`)),
    passes: passes.length,
    passReads,
    passMsMedian: median(passes.map((p) => (typeof p.durationMs === 'number' ? p.durationMs : Number.NaN))),
    agentCpuSeconds: round(cpuSeconds(agent.pid) - cpu0, 2),
  };
}

function tally(xs: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

/** Until the agent has logged nothing for `ms` (at most 60 s). */
async function quiet(agent: Agent, ms: number): Promise<void> {
  const deadline = performance.now() + 60_000;
  let seen = agent.mark();
  let since = performance.now();
  while (performance.now() - since < ms) {
    if (performance.now() > deadline) throw new Error('the agent did not go quiet after the burst');
    await sleep(100);
    if (agent.mark() !== seen) {
      seen = agent.mark();
      since = performance.now();
    }
  }
}

// ------------------------------------------------------------------ Docker API

/** A bridge network with an explicit subnet (Docker's default pools hold only ~30). */
async function createNetwork(lab: Lab, name: string, subnet: string, internal = false): Promise<string> {
  await dockerApi(lab, 'POST', '/networks/create', { Name: name, Driver: 'bridge', CheckDuplicate: true, Internal: internal, IPAM: { Config: [{ Subnet: subnet }] } });
  return name;
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

/** The agent's CPU and its reaped iptables processes', in seconds. */
function cpuSeconds(pid: number): number {
  const c = processCpuMs(pid);
  return (c.self + c.children) / 1000;
}

const mb = (kb: number): number => round(kb / 1024, 1);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Result {
  readonly quick: boolean;
  readonly parts: readonly AgentPart[];
  readonly durationSeconds: number;
  readonly loadavg: { readonly start: number[]; readonly end: number[] };
  /** Null when the part was not run (`--agent-parts`). */
  readonly firstProbe: { readonly control: FirstProbes; readonly agent: FirstProbes } | null;
  readonly race: { readonly control: RaceRounds; readonly agent: RaceRounds } | null;
  readonly memory: { readonly idleRssMb: number; readonly idleAnonMb: number; readonly idleFileMb: number; readonly startupPeakMb: number; readonly burstPeakMb: number | null };
  readonly burst: BurstResult | null;
  readonly driftEventsDuringBench: number;
}

/** A figure is void unless its control, without the agent, got the credentials every time. */
function controlNote(got: number, rounds: number): string | null {
  return got === rounds ? null : `void: the control without the agent got the credentials in only ${got} of ${rounds}`;
}

function targetsOf(r: Result): Target[] {
  const out: Target[] = [];
  if (r.firstProbe !== null) {
    const fc = controlNote(r.firstProbe.control.gotCredentials, r.firstProbe.control.rounds);
    const fa = r.firstProbe.agent;
    out.push({ id: 'agent.first-probe', what: 'first probe on a network created just before, with the agent: blocked', target: `all (control: all ${r.firstProbe.control.rounds} read it)`, value: fc ?? `${fa.rounds - fa.gotCredentials} of ${fa.rounds} (control: ${r.firstProbe.control.gotCredentials} of ${r.firstProbe.control.rounds} read it)`, met: fc === null && fa.gotCredentials === 0 && fa.refused === fa.rounds });
  }
  if (r.race !== null) {
    const rc = controlNote(r.race.control.gotCredentials, r.race.control.rounds);
    const ra = r.race.agent;
    out.push({ id: 'agent.race', what: 'race: running container connected to a fresh network, probing at once: leaks', target: `0 (control: all ${r.race.control.rounds} read it)`, value: rc ?? `${ra.gotCredentials} of ${ra.rounds} (${ra.refused} refused, ${ra.other} other; control: ${r.race.control.gotCredentials} of ${r.race.control.rounds} read it)`, met: rc === null && ra.gotCredentials === 0 && ra.refused === ra.rounds });
  }
  out.push({ id: 'agent.rss-idle', what: 'agent VmRSS at idle (lab, Docker connected)', target: `< ${MAX_IDLE_RSS_MB} MB`, value: `${r.memory.idleRssMb} MB`, met: r.memory.idleRssMb < MAX_IDLE_RSS_MB });
  if (r.burst !== null) {
    out.push(
      { id: 'agent.rss-burst', what: `agent peak RSS during ${r.burst.events} network events`, target: `< ${MAX_PEAK_RSS_MB} MB`, value: `${r.burst.peakMb} MB`, met: r.burst.peakMb < MAX_PEAK_RSS_MB },
      { id: 'agent.burst-writes', what: `iptables-restore runs for ${r.burst.events} network events`, target: '0', value: String(r.burst.restores), met: r.burst.restores === 0 },
    );
  }
  out.push({ id: 'agent.no-drift', what: 'drift events logged while Docker alone changed networks', target: '0', value: String(r.driftEventsDuringBench), met: r.driftEventsDuringBench === 0 });
  return out;
}

function render(r: Result): string {
  const p50 = (xs: readonly number[]): string => (xs.length === 0 ? '' : String(round(median(xs))));
  const max = (xs: readonly number[]): string => (xs.length === 0 ? '' : String(Math.max(...xs)));
  const out = [`agent daemon in a Docker lab, parts ${r.parts.join(', ')} (${r.durationSeconds} s; load average ${r.loadavg.start.join(' ')} at start, ${r.loadavg.end.join(' ')} at end)`];
  if (r.firstProbe !== null) {
    const fp = (label: string, x: FirstProbes): string[] => [label, String(x.rounds), String(x.gotCredentials), String(x.refused), p50(x.createToResultMs), p50(x.innerMs), p50(x.noticedMs)];
    out.push(
      renderTable(
        ['first probe: create a network, then docker run a probe on it', '>rounds', '>read the metadata', '>refused', '>create -> result ms p50', '>attempt ms p50 (inside)', '>agent logged it covered ms p50'],
        [fp('control: no agent', r.firstProbe.control), fp('with the agent', r.firstProbe.agent)],
      ),
      '',
    );
  }
  if (r.race !== null) {
    const rr = (label: string, x: RaceRounds): string[] => [label, String(x.rounds), String(x.gotCredentials), String(x.refused), String(x.other), p50(x.routePolls), max(x.routePolls)];
    out.push(
      renderTable(
        ['race: running container connected to a fresh network, probing at its first route', '>rounds', '>read the metadata', '>refused', '>other', '>route-table polls p50', '>max'],
        [rr('control: no agent', r.race.control), rr('with the agent', r.race.agent)],
      ),
      ...[...r.race.control.otherSamples, ...r.race.agent.otherSamples].map((x) => `  other: ${x}`),
      '',
    );
  }
  const idle = `memory: VmRSS idle ${r.memory.idleRssMb} MB (anonymous ${r.memory.idleAnonMb}, file-backed ${r.memory.idleFileMb}; start-up high-water mark ${r.memory.startupPeakMb})`;
  const b = r.burst;
  if (b === null) return [...out, idle].join('\n');
  const list = (t: Readonly<Record<string, number>>): string => Object.entries(t).map(([k, n]) => `${k} x${n}`).join(', ');
  const reads = list(b.passReads);
  return [
    ...out,
    `${idle}; peak during ${b.events} events ${b.peakMb} MB (VmHWM reset before; sampled every 50 ms: ${b.sampledPeakMb}), ${b.afterMb} MB after`,
    `${b.events} network events in ${b.seconds} s: ${b.passes} passes (${reads || 'none'}; median ${b.passMsMedian} ms), ${b.restores} iptables-restore runs${b.restores > 0 ? ` (${list(b.restoreTables)})` : ''}, agent CPU ${b.agentCpuSeconds} s (its own and its iptables processes')`,
    ...(Object.keys(b.driftKinds).length > 0 ? [`drift the agent logged during those events: ${list(b.driftKinds)}`] : []),
  ].join('\n');
}

/** The agent part of `npm run bench`. */
export const agentModule: BenchModule = {
  name: 'agent',
  description: 'the agent daemon in the Docker lab: first probe on a fresh network and the connect race (each with a control), memory at idle and across 500 events',
  async run(ctx) {
    return runAgentBench({ parts: ctx.args.agentParts, progress: (l) => ctx.progress(`agent: ${l}`) });
  },
};
