import { type Endpoint, formatEndpoint } from './endpoint.js';
import { CHECK, type Finding, type FindingStatus, type Severity } from './findings.js';

/**
 * `audit --probe`: proof from where the attacker stands. The shell opens a TCP connection
 * to each endpoint from inside one running container's network namespace per Docker
 * network; this module picks those containers, and turns what happened into verdicts,
 * findings, text and JSON. Plain data in, plain data out.
 */

/** A running container whose network namespace stands for its network. */
export interface ProbeContainer {
  /** Docker's full id (hex). */
  readonly id: string;
  readonly name: string;
  /** Its main process as this host's pid namespace numbers it (`docker inspect -f {{.State.Pid}}`). */
  readonly pid: number;
}

/** One network to probe, and the container to probe it from. */
export interface ProbeTarget {
  readonly network: string;
  readonly container: ProbeContainer;
  /** Docker's `host` network: the namespace is the host's, and only the container's cgroup tells it apart. */
  readonly hostNetwork: boolean;
  /** The container's cgroup v2 path (the `0::` line of /proc/PID/cgroup); needed for host-network containers. */
  readonly cgroup: string | null;
}

/** What one connection attempt did. `error` carries the errno code (EHOSTUNREACH, ...). */
export type ConnectResult = 'refused' | 'timeout' | 'connected' | 'error';

interface OutcomeBase {
  readonly network: string;
  readonly container: ProbeContainer;
  readonly hostNetwork: boolean;
  readonly endpoint: Endpoint;
}

export interface ProbedOutcome extends OutcomeBase {
  readonly result: ConnectResult;
  /** Milliseconds from opening the socket to the answer (or to giving up). */
  readonly ms: number;
  readonly code: string | null;
}

export interface NotProbedOutcome extends OutcomeBase {
  readonly result: 'not-probed';
  /** Why no connection was tried (the namespace could not be entered, the time budget ran out, ...). */
  readonly reason: string;
}

export type ProbeOutcome = ProbedOutcome | NotProbedOutcome;

/** A Docker network as the probe needs it. */
export interface ProbeNetworkFact {
  readonly name: string;
  readonly driver: string;
}

/** A container as the probe needs it; `networks` are names. */
export interface ProbeContainerFact {
  readonly id: string;
  readonly name: string;
  readonly pid: number;
  readonly running: boolean;
  readonly networks: readonly string[];
  readonly cgroup: string | null;
}

/** A network nobody could be probed from. */
export interface UnprobedNetwork {
  readonly network: string;
  readonly hostNetwork: boolean;
  readonly reason: string;
}

export const NO_RUNNING_CONTAINER = 'no running container';

/**
 * One container per network: the first running one by name, then id, so two audits of
 * the same host probe from the same place. A container on that network alone comes
 * before one on several: a multi-homed container reaches the endpoint through its default
 * route, that is through one of its networks only, so it would prove nothing about the
 * others. Docker's `none` network (driver `null`) has only a loopback interface: there is
 * nothing there to prove, so it is left out.
 */
export function chooseProbeTargets(networks: readonly ProbeNetworkFact[], containers: readonly ProbeContainerFact[]): { targets: ProbeTarget[]; unprobed: UnprobedNetwork[] } {
  const running = containers.filter((c) => c.running && Number.isInteger(c.pid) && c.pid > 0).sort((a, b) => compare(a.name, b.name) || compare(a.id, b.id));
  const targets: ProbeTarget[] = [];
  const unprobed: UnprobedNetwork[] = [];
  for (const n of [...networks].sort((a, b) => compare(a.name, b.name))) {
    if (n.driver === 'null') continue;
    const hostNetwork = n.driver === 'host';
    const on = running.filter((r) => r.networks.includes(n.name));
    const c = on.find((r) => r.networks.length === 1) ?? on[0];
    if (c === undefined) unprobed.push({ network: n.name, hostNetwork, reason: NO_RUNNING_CONTAINER });
    else targets.push({ network: n.name, container: { id: c.id, name: c.name, pid: c.pid }, hostNetwork, cgroup: c.cgroup });
  }
  return { targets, unprobed };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * What a result proves. `blocked`: the endpoint cannot be reached from there (refused, timed
 * out, or no route to it: the kernel answered for the endpoint). `exposed`: a connection opened.
 * `unknown`: the attempt failed in a way that proves neither (EMFILE, ...).
 */
export type ProbeVerdict = 'blocked' | 'exposed' | 'not-probed' | 'unknown';

// An ICMP unreachable (REJECT --reject-with icmp-host-unreachable), no route at all, or no
// source address of that family (an IPv6 endpoint from a container without IPv6): either
// way nothing answers from the endpoint.
const UNREACHABLE = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

export function verdictOf(o: ProbeOutcome): ProbeVerdict {
  switch (o.result) {
    case 'connected':
      return 'exposed';
    case 'refused':
    case 'timeout':
      return 'blocked';
    case 'error':
      return o.code !== null && UNREACHABLE.has(o.code) ? 'blocked' : 'unknown';
    case 'not-probed':
      return 'not-probed';
  }
}

/** The JSON form of one endpoint's probe (`audit --probe --format json`). */
export interface EndpointProbe {
  readonly endpoint: string;
  readonly family: Endpoint['family'];
  readonly result: ProbeOutcome['result'];
  readonly verdict: ProbeVerdict;
  readonly ms: number | null;
  readonly code: string | null;
  readonly reason: string | null;
}

export interface NetworkProbe {
  readonly network: string;
  readonly hostNetwork: boolean;
  /** The container probed from; null when the network had none running. */
  readonly container: ProbeContainer | null;
  /** Why the network was not probed at all; null when it was (its endpoints say how it went). */
  readonly notProbed: string | null;
  readonly endpoints: readonly EndpointProbe[];
}

export interface ProbeReport {
  /** Networks by name. */
  readonly networks: readonly NetworkProbe[];
  /** Endpoint probes by verdict, plus networks with no running container. */
  readonly summary: Readonly<Record<ProbeVerdict, number>> & { readonly networksNotProbed: number };
}

export function buildProbeReport(outcomes: readonly ProbeOutcome[], unprobed: readonly UnprobedNetwork[]): ProbeReport {
  const byNetwork = new Map<string, { hostNetwork: boolean; container: ProbeContainer | null; notProbed: string | null; endpoints: EndpointProbe[] }>();
  const summary = { blocked: 0, exposed: 0, 'not-probed': 0, unknown: 0, networksNotProbed: unprobed.length };
  for (const o of outcomes) {
    let n = byNetwork.get(o.network);
    if (n === undefined) {
      n = { hostNetwork: o.hostNetwork, container: o.container, notProbed: null, endpoints: [] };
      byNetwork.set(o.network, n);
    }
    const verdict = verdictOf(o);
    summary[verdict]++;
    n.endpoints.push({
      endpoint: formatEndpoint(o.endpoint),
      family: o.endpoint.family,
      result: o.result,
      verdict,
      ms: o.result === 'not-probed' ? null : o.ms,
      code: o.result === 'not-probed' ? null : o.code,
      reason: o.result === 'not-probed' ? o.reason : null,
    });
  }
  for (const u of unprobed) {
    if (!byNetwork.has(u.network)) byNetwork.set(u.network, { hostNetwork: u.hostNetwork, container: null, notProbed: u.reason, endpoints: [] });
  }
  const networks = [...byNetwork.entries()].sort(([a], [b]) => compare(a, b)).map(([network, n]) => ({ network, ...n }));
  return { networks, summary };
}

/** `web-1 (0123456789ab)`: the name a person knows and the id Docker prints. */
export function describeContainer(c: ProbeContainer): string {
  return `${c.name} (${c.id.slice(0, 12)})`;
}

function evidenceOf(n: NetworkProbe, e: EndpointProbe): string {
  const from = n.container === null ? '' : ` from container ${describeContainer(n.container)}`;
  const where = `${from} on network ${n.network}`;
  if (e.result === 'not-probed') return `not probed${where}: ${e.reason ?? 'no reason given'}`;
  const what = e.result === 'timeout' ? 'timed out' : e.result === 'error' ? `${e.verdict === 'blocked' ? 'unreachable' : 'failed'} (${e.code ?? 'no code'})` : e.result;
  return `${what} in ${Math.round(e.ms ?? 0)} ms${where}`;
}

const STATUS: Record<ProbeVerdict, { status: FindingStatus; severity: Severity }> = {
  exposed: { status: 'fail', severity: 'critical' },
  blocked: { status: 'pass', severity: 'info' },
  unknown: { status: 'warn', severity: 'medium' },
  // Someone runs there and we could not look: the audit must not read as proof.
  'not-probed': { status: 'warn', severity: 'medium' },
};

/**
 * Findings in the audit's scheme: IG-701 (reachable from a network?), IG-702 (not probed),
 * IG-703 (the attempt proved nothing). One per network and endpoint, plus one per network
 * without a running container (INFO: nothing runs there that could reach the endpoint).
 */
export function probeFindings(report: ProbeReport): Finding[] {
  const findings: Finding[] = [];
  for (const n of report.networks) {
    if (n.notProbed !== null) {
      findings.push({ id: CHECK.probeNotProbed, kind: 'probe-not-probed', status: 'info', severity: 'info', network: n.network, message: `network ${n.network} not probed: ${n.notProbed}`, evidence: [] });
      continue;
    }
    for (const e of n.endpoints) {
      const base = { ...STATUS[e.verdict], family: e.family, endpoint: e.endpoint, network: n.network, evidence: [evidenceOf(n, e)] };
      if (e.verdict === 'exposed') {
        findings.push({ ...base, id: CHECK.probe, kind: 'probe-connected', message: `${e.endpoint} is reachable from network ${n.network}: a connection opened`, remediation: 'imds-guard apply' });
      } else if (e.verdict === 'blocked') {
        findings.push({ ...base, id: CHECK.probe, kind: 'probe-blocked', message: `${e.endpoint} is not reachable from network ${n.network}` });
      } else if (e.verdict === 'not-probed') {
        findings.push({ ...base, id: CHECK.probeNotProbed, kind: 'probe-not-probed', message: `${e.endpoint} not probed from network ${n.network}: ${e.reason ?? ''}` });
      } else {
        findings.push({ ...base, id: CHECK.probeError, kind: 'probe-error', message: `the probe of ${e.endpoint} from network ${n.network} proved nothing (${e.code ?? 'no code'})` });
      }
    }
  }
  return findings;
}

const LABEL: Record<FindingStatus, string> = { pass: 'PASS', fail: 'FAIL', warn: 'WARN', info: 'INFO' };

/** The probe section of `audit --probe`: a verdict line, then one line per network and endpoint. */
export function renderProbeText(report: ProbeReport): string {
  const s = report.summary;
  const lines = [`probe: ${s.exposed} exposed, ${s.blocked} blocked, ${s.unknown} unknown, ${s['not-probed']} not probed; ${s.networksNotProbed} network(s) with no running container`];
  for (const f of probeFindings(report)) {
    lines.push(`[${LABEL[f.status]}] ${f.id} ${f.message}`);
    for (const e of f.evidence) lines.push(`       evidence: ${e}`);
  }
  return `${lines.join('\n')}\n`;
}
