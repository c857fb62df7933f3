import type { ContestRecord } from './contest.js';
import type { NetworkView } from './coverage.js';
import type { Finding, FindingStatus } from './findings.js';
import { type ProbeReport, probeFindings, renderProbeText } from './probe-report.js';

/** The audit report. Its JSON form is documented in the README and only grows (schemaVersion). */
export interface AuditReport {
  readonly schemaVersion: 1;
  readonly tool: 'imds-guard';
  readonly version: string;
  readonly generatedAt: string;
  readonly host: string;
  readonly protected: boolean;
  readonly backend: string;
  /** The endpoints hidden, and how they were chosen (a cloud preset detected from DMI, the default, or the configuration). */
  readonly endpoints: EndpointsView;
  /** Interfaces whose forwarded traffic keeps access by configuration. */
  readonly allow: readonly string[];
  /** Every Docker network and how it is covered. */
  readonly networks: readonly NetworkView[];
  /** Every running host-network container and how it is covered (empty when the host-network side is off). */
  readonly hostContainers: readonly HostContainerView[];
  readonly summary: Readonly<Record<FindingStatus, number>>;
  readonly findings: readonly Finding[];
  /** What the running agent recorded (null when no agent state was found). */
  readonly agent: AgentHistory | null;
  /** `audit --probe`: what a connection from inside each network's containers did (absent without --probe). */
  readonly probe?: ProbeReport;
}

export interface AgentHistory {
  readonly startedAt: string;
  readonly lastReconcileAt: string | null;
  readonly lastResult: 'converged' | 'repaired' | 'drift' | 'error' | null;
  readonly lastError: string | null;
  readonly driftCounts: Readonly<Record<string, number>>;
  readonly recentDrift: readonly { readonly at: string; readonly kind: string; readonly message: string; readonly repaired: boolean }[];
  /** Repairs the agent had to make again and again (core/contest), recent ones; `audit` reports them as IG-307. */
  readonly contests: readonly ContestRecord[];
}

export interface HostContainerView {
  readonly name: string;
  readonly id: string;
  readonly cgroup: string | null;
  readonly coverage: string;
  readonly reason: string;
}

export interface EndpointsView {
  readonly list: readonly string[];
  readonly chosen: string;
  readonly cloud: string | null;
  readonly reason: string;
}

export function buildReport(args: { version: string; host: string; now: Date; backend: string; endpoints: EndpointsView; allow: readonly string[]; networks: readonly NetworkView[]; hostContainers: readonly HostContainerView[]; findings: readonly Finding[]; agent: AgentHistory | null; probe?: ProbeReport }): AuditReport {
  const summary: Record<FindingStatus, number> = { pass: 0, fail: 0, warn: 0, info: 0 };
  const findings = [...args.findings, ...(args.probe === undefined ? [] : probeFindings(args.probe))];
  for (const f of findings) summary[f.status]++;
  return {
    schemaVersion: 1,
    tool: 'imds-guard',
    version: args.version,
    generatedAt: args.now.toISOString(),
    host: args.host,
    protected: summary.fail === 0,
    backend: args.backend,
    endpoints: args.endpoints,
    allow: args.allow,
    networks: args.networks,
    hostContainers: args.hostContainers,
    summary,
    findings,
    agent: args.agent,
    ...(args.probe === undefined ? {} : { probe: args.probe }),
  };
}

const LABEL: Record<FindingStatus, string> = { pass: 'PASS', fail: 'FAIL', warn: 'WARN', info: 'INFO' };
const ORDER: Record<FindingStatus, number> = { fail: 0, warn: 1, pass: 2, info: 3 };

export function renderReportText(r: AuditReport): string {
  const lines = [
    `imds-guard audit of ${r.host} at ${r.generatedAt}`,
    `verdict: ${r.protected ? 'PROTECTED' : 'NOT PROTECTED / DRIFT'} (${r.summary.fail} fail, ${r.summary.warn} warn, ${r.summary.pass} pass)`,
    `backend: ${r.backend}; endpoints: ${r.endpoints.list.join(' ')} (${r.endpoints.cloud ?? r.endpoints.chosen}: ${r.endpoints.reason})`,
    `covered: every container on every forwarded interface${r.allow.length > 0 ? `, except allowed ${r.allow.join(' ')}` : ''}`,
    '',
  ];
  if (r.networks.length > 0) {
    lines.push('networks:');
    for (const n of r.networks) lines.push(`  ${n.name.padEnd(20)} ${n.driver.padEnd(8)} ${n.coverage.padEnd(13)} ${n.why}${n.containers.length > 0 ? ` [${n.containers.join(', ')}]` : ''}`);
    lines.push('');
  }
  if (r.hostContainers.length > 0) {
    lines.push('host-network containers:');
    for (const c of r.hostContainers) lines.push(`  ${c.name.padEnd(20)} ${c.coverage.padEnd(13)} cgroup ${c.cgroup ?? 'unknown'}: ${c.reason}`);
    lines.push('');
  }
  if (r.probe !== undefined) lines.push(renderProbeText(r.probe).trimEnd(), '');
  const probeIds = new Set(['IG-701', 'IG-702', 'IG-703']);
  const sorted = [...r.findings].filter((f) => r.probe === undefined || !probeIds.has(f.id)).sort((a, b) => ORDER[a.status] - ORDER[b.status]);
  for (const f of sorted) {
    const where = [f.family, f.backend !== undefined && f.kind.startsWith('other-backend') ? f.backend : undefined, f.table].filter(Boolean).join('/');
    lines.push(`[${LABEL[f.status]}] ${f.id} ${where ? `${where} ` : ''}${f.message}`);
    for (const e of f.evidence) lines.push(`       evidence: ${e}`);
    if (f.remediation && f.status !== 'pass') lines.push(`       fix: ${f.remediation}`);
  }
  if (r.agent !== null) {
    lines.push('', `agent: started ${r.agent.startedAt}; last verified ${r.agent.lastReconcileAt ?? 'never'} (${r.agent.lastResult ?? 'n/a'})`);
    const counts = Object.entries(r.agent.driftCounts);
    if (counts.length > 0) lines.push(`drift since start: ${counts.map(([k, n]) => `${k}=${n}`).join(' ')}`);
    for (const d of r.agent.recentDrift.slice(-10)) lines.push(`  ${d.at} ${d.kind}${d.repaired ? ' (repaired)' : ''}: ${d.message}`);
  }
  return `${lines.join('\n')}\n`;
}
