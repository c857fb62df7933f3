import { hostname } from 'node:os';
import type { Config } from '../core/config.js';
import { contestFindings } from '../core/contest.js';
import { formatEndpoint } from '../core/endpoint.js';
import { type AuditReport, buildReport } from '../core/report.js';
import { historyOf, readAgentState } from './agent-state.js';
import type { Ports } from './ports.js';
import { probeFromContainers } from './probe-audit.js';
import { reconcile } from './reconcile.js';

/** A report-mode pass over the whole host, plus what the running agent recorded. */
export async function audit(config: Config, ports: Ports, version: string, now: () => Date, opts: { probe?: boolean } = {}): Promise<AuditReport> {
  const result = await reconcile({ ...config, mode: 'report' }, ports);
  const state = await readAgentState(ports.files, config.stateDir);
  const probe = opts.probe === true ? await probeFromContainers(config, ports) : undefined;
  const at = now();
  return buildReport({
    version,
    host: hostname(),
    now: at,
    backend: result.backend,
    endpoints: { list: config.endpoints.map(formatEndpoint), ...config.endpointChoice },
    allow: config.allow,
    networks: result.plan.networks,
    hostContainers: (result.hostNet?.containers ?? []).map((c) => ({ name: c.name, id: c.id, cgroup: c.cgroup, coverage: c.coverage, reason: c.reason })),
    // A fight the running agent saw is a finding of its own: the tables alone, read now, may look fine.
    findings: [...result.findings, ...(state === null ? [] : contestFindings(state.contests, at))],
    agent: state === null ? null : historyOf(state),
    ...(probe === undefined ? {} : { probe }),
  });
}
