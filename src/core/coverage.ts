import type { DockerNetwork } from './docker-facts.js';
import { CHECK, type Finding } from './findings.js';

/**
 * How a Docker network's containers are kept from the endpoints:
 * - forwarded: their traffic is routed through the host (bridge, and overlay through
 *   docker_gwbridge), so the catch-all in nat PREROUTING turns it away;
 * - host: they share the host's stack; covered by the filter OUTPUT cgroup rules;
 * - allowed: forwarded, but through an interface the config allows: exposed on purpose;
 * - harmless: no way out (`--network none`, an internal network);
 * - not-coverable: the traffic leaves on the parent interface without passing the
 *   host's PREROUTING (macvlan, ipvlan), or a driver we do not know.
 */
export type NetworkCoverage = 'forwarded' | 'host' | 'allowed' | 'harmless' | 'not-coverable';

export interface NetworkView {
  readonly name: string;
  readonly driver: string;
  readonly coverage: NetworkCoverage;
  readonly interface: string | null;
  readonly parent: string | null;
  readonly containers: readonly string[];
  readonly why: string;
}

// Overlay networks reach the outside through this bridge.
const GWBRIDGE = 'docker_gwbridge';

export function networkCoverage(n: DockerNetwork, allow: readonly string[]): NetworkView {
  const base = { name: n.name, driver: n.driver, interface: n.bridge, parent: n.parent, containers: n.containers };
  switch (n.driver) {
    case 'bridge':
      if (n.internal) return { ...base, coverage: 'harmless', why: 'an internal network has no route off its bridge' };
      if (n.bridge !== null && allow.includes(n.bridge)) return { ...base, coverage: 'allowed', why: `its bridge ${n.bridge} is an allowed interface` };
      return { ...base, coverage: 'forwarded', why: `forwarded from ${n.bridge ?? 'its bridge'} through the host's PREROUTING` };
    case 'overlay':
      if (n.internal) return { ...base, coverage: 'harmless', why: 'an internal network has no route off the overlay' };
      if (allow.includes(GWBRIDGE)) return { ...base, coverage: 'allowed', why: `it reaches the outside through ${GWBRIDGE}, an allowed interface` };
      return { ...base, coverage: 'forwarded', why: `forwarded from ${GWBRIDGE} through the host's PREROUTING` };
    case 'host':
      return { ...base, coverage: 'host', why: "its containers share the host's stack: the filter OUTPUT cgroup rules decide" };
    case 'null':
      return { ...base, coverage: 'harmless', why: 'containers with --network none have no network' };
    case 'macvlan':
    case 'ipvlan':
      return { ...base, coverage: 'not-coverable', why: `${n.driver} traffic leaves on ${n.parent ?? 'its parent interface'} without passing the host's PREROUTING` };
    default:
      return { ...base, coverage: 'not-coverable', why: `driver ${n.driver} is not known to route through the host's PREROUTING` };
  }
}

const NOT_COVERABLE_FIX =
  'use a bridge network for these containers; on AWS require IMDSv2 with a hop limit of 1 (aws ec2 modify-instance-metadata-options --instance-id ID --http-tokens required --http-put-response-hop-limit 1); or block the metadata addresses for this traffic in the cloud network (VPC/subnet)';

/** One finding per Docker network: every network is listed with how it is covered. */
export function networkFindings(networks: readonly DockerNetwork[], allow: readonly string[], notCoverable: 'warn' | 'fail'): { views: NetworkView[]; findings: Finding[] } {
  const views = [...networks].sort((a, b) => a.name.localeCompare(b.name)).map((n) => networkCoverage(n, allow));
  const findings = views.map((v): Finding => {
    const at = { network: v.name, ...(v.interface === null ? {} : { interface: v.interface }) };
    const members = v.containers.length === 0 ? 'no containers' : `containers: ${v.containers.join(', ')}`;
    const evidence = [`driver ${v.driver}${v.interface === null ? '' : `, interface ${v.interface}`}${v.parent === null ? '' : `, parent ${v.parent}`}; ${members}`];
    switch (v.coverage) {
      case 'forwarded':
      case 'host':
        return { ...at, id: CHECK.network, kind: 'network-covered', status: 'info', severity: 'info', message: `network ${v.name} (${v.driver}): ${v.why}`, evidence };
      case 'harmless':
        return { ...at, id: CHECK.network, kind: 'network-harmless', status: 'info', severity: 'info', message: `network ${v.name} (${v.driver}): harmless, ${v.why}`, evidence };
      case 'allowed':
        return { ...at, id: CHECK.allowedBridge, kind: 'allowed-docker-bridge', status: 'fail', severity: 'high', message: `network ${v.name} is EXPOSED: ${v.why}, so its containers can read the metadata`, evidence, remediation: `remove ${v.interface ?? GWBRIDGE} from allow, or move the containers to another network` };
      case 'not-coverable':
        return { ...at, id: CHECK.notCoverable, kind: 'network-not-coverable', status: notCoverable, severity: 'high', message: `network ${v.name} is exposed and cannot be covered from the host: ${v.why}`, evidence, remediation: NOT_COVERABLE_FIX };
    }
  });
  return { views, findings };
}
