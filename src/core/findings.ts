import type { Backend, Family } from './family.js';

/** What changed from the desired state. Each kind is logged as a `drift` event and counted. */
export type DriftKind =
  | 'chain-missing'
  | 'rule-missing'
  | 'rule-altered'
  | 'rule-unknown'
  | 'rule-reordered'
  /** A cgroup rule resolved against a cgroup since removed and made again: it matches nothing. */
  | 'cgroup-stale'
  | 'jump-missing'
  | 'jump-not-first'
  | 'jump-duplicate'
  | 'jump-altered'
  | 'foreign-undermining'
  /** A rule in the other iptables backend that takes endpoint traffic at the same hook. */
  | 'other-backend-undermining'
  /** Traffic to an endpoint is exempted from connection tracking, so it never meets a nat rule. */
  | 'bypass-notrack'
  /** A native nftables chain (someone else's table) that untracks endpoint traffic before our nat rule, or does its own dnat for it first. */
  | 'bypass-nft'
  | 'other-backend'
  /** A nat table of a family the host has could not be read: nothing about it was checked. */
  | 'table-unreadable'
  /** An allowed interface is a Docker bridge: its containers keep access. */
  | 'allowed-docker-bridge'
  /** A Docker network whose traffic never passes the host's PREROUTING (macvlan, ipvlan). */
  | 'network-not-coverable'
  /** A host-network container the host cannot cover (no cgroup v2, no cgroup match, a cgroup not its own). */
  | 'host-container-exposed'
  | 'boot-script-missing'
  | 'boot-script-stale'
  | 'boot-script-edited'
  | 'boot-script-not-executable'
  | 'local-service-disabled'
  /** The endpoint's rule is in place but the jump does not take traffic to it. */
  | 'unprotected';

export type InfoKind =
  | 'protected'
  | 'seed-duplicate'
  | 'family-unavailable'
  | 'backend'
  | 'conntrack'
  | 'boot-script-ok'
  | 'local-service-ok'
  | 'docker'
  | 'endpoints'
  | 'network-covered'
  | 'network-harmless'
  | 'host-container';

/** What `audit --probe` found from inside a container's network namespace (IG-7xx). */
/** Someone keeps undoing the protection: the same repair again and again (IG-307, from the agent's state). */
export type NeighbourKind = 'contest';

export type ProbeKind = 'probe-connected' | 'probe-blocked' | 'probe-not-probed' | 'probe-error';

export type FindingStatus = 'pass' | 'fail' | 'warn' | 'info';
export type Severity = 'critical' | 'high' | 'medium' | 'low' | 'info';

export interface Finding {
  /** Stable check id (documented in the README); the same check keeps its id across releases. */
  readonly id: string;
  readonly kind: DriftKind | InfoKind | ProbeKind | NeighbourKind;
  readonly status: FindingStatus;
  readonly severity: Severity;
  readonly message: string;
  readonly family?: Family;
  readonly backend?: Backend;
  /** The table and chain the finding is about. */
  readonly table?: string;
  readonly chain?: string;
  readonly interface?: string;
  /** The Docker network or container the finding is about. */
  readonly network?: string;
  readonly container?: string;
  readonly endpoint?: string;
  /** Lines read from the host that show the finding (rules as iptables-save prints them, file facts). */
  readonly evidence: readonly string[];
  /** What to do, ready to paste: commands are quoted for a POSIX shell (see shell-words). */
  readonly remediation?: string;
}

/** Check ids: one per question the audit answers. */
export const CHECK = {
  protection: 'IG-101',
  chain: 'IG-102',
  ruleAltered: 'IG-103',
  ruleUnknown: 'IG-104',
  ruleOrder: 'IG-105',
  // IG-106 and IG-107 (ipset) are retired with the per-bridge coverage they served.
  cgroupStale: 'IG-108',
  backstop: 'IG-110',
  jump: 'IG-201',
  jumpDuplicate: 'IG-202',
  undermining: 'IG-301',
  seedDuplicate: 'IG-302',
  otherBackend: 'IG-303',
  otherBackendUndermining: 'IG-304',
  bypass: 'IG-305',
  nftBypass: 'IG-306',
  contest: 'IG-307',
  bootScript: 'IG-401',
  localService: 'IG-402',
  family: 'IG-501',
  backend: 'IG-502',
  conntrack: 'IG-503',
  docker: 'IG-504',
  endpoints: 'IG-505',
  network: 'IG-601',
  allowedBridge: 'IG-602',
  notCoverable: 'IG-603',
  hostContainer: 'IG-801',
  probe: 'IG-701',
  probeNotProbed: 'IG-702',
  probeError: 'IG-703',
} as const;

// Failing findings that are not drift: exposure the host's configuration or Docker's
// networks create, or a table we could not read; nobody undid our work.
const NOT_DRIFT = new Set<Finding['kind']>(['network-not-coverable', 'allowed-docker-bridge', 'table-unreadable', 'host-container-exposed']);

/** Something changed from the desired state (or undermines it): logged as a drift event and repaired where we can. */
export function isDrift(f: Finding): boolean {
  return f.status === 'fail' && !NOT_DRIFT.has(f.kind);
}

/** The protection verdict fails closed: any failing finding, drift or exposure, means not protected. */
export function isFailure(f: Finding): boolean {
  return f.status === 'fail';
}

/** The protection verdict: any drift (or missing protection) means exit 1. */
export function hasDrift(findings: readonly Finding[]): boolean {
  return findings.some(isDrift);
}

/** A finding's identity across passes, so the daemon logs a drift once when it appears, not every check. */
export function findingKey(f: Finding): string {
  return [f.id, f.kind, f.family ?? '', f.backend ?? '', f.table ?? '', f.chain ?? '', f.interface ?? '', f.network ?? '', f.container ?? '', f.endpoint ?? '', f.evidence.join('|')].join('\u0000');
}

// Failures a pass cannot repair: they need the operator (or are beyond the host's reach).
// A NOTRACK rule in raw, or a native nftables chain, is someone else's rule in a table
// imds-guard never writes.
const OPERATOR = new Set<Finding['kind']>(['network-not-coverable', 'allowed-docker-bridge', 'table-unreadable', 'other-backend-undermining', 'bypass-notrack', 'bypass-nft', 'host-container-exposed']);

/** A failure `apply` cannot repair, so `apply` exits 1 even in enforce mode. */
export function needsOperator(f: Finding): boolean {
  return f.status === 'fail' && OPERATOR.has(f.kind);
}
