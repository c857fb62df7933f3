import type { Backend, Family } from './family.js';

/** What changed from the desired state. Each kind is logged as a `drift` event and counted. */
export type DriftKind =
  | 'chain-missing'
  | 'rule-missing'
  | 'rule-altered'
  | 'rule-unknown'
  | 'rule-reordered'
  | 'set-missing'
  | 'set-altered'
  | 'set-member-missing'
  | 'set-member-unknown'
  | 'jump-missing'
  | 'jump-not-first'
  | 'jump-duplicate'
  | 'jump-altered'
  | 'foreign-undermining'
  | 'other-backend'
  | 'boot-script-missing'
  | 'boot-script-stale'
  | 'boot-script-edited'
  | 'boot-script-not-executable'
  | 'local-service-disabled'
  /** The endpoint's rule is in place but the jump does not take traffic to it. */
  | 'unprotected';

export type InfoKind = 'protected' | 'seed-duplicate' | 'family-unavailable' | 'backend' | 'conntrack' | 'boot-script-ok' | 'local-service-ok' | 'docker';

/** What `audit --probe` found from inside a container's network namespace (IG-7xx). */
export type ProbeKind = 'probe-connected' | 'probe-blocked' | 'probe-not-probed' | 'probe-error';

export type FindingStatus = 'pass' | 'fail' | 'warn' | 'info';
export type Severity = 'critical' | 'high' | 'medium' | 'low' | 'info';

export interface Finding {
  /** Stable check id (documented in the README); the same check keeps its id across releases. */
  readonly id: string;
  readonly kind: DriftKind | InfoKind | ProbeKind;
  readonly status: FindingStatus;
  readonly severity: Severity;
  readonly message: string;
  readonly family?: Family;
  readonly backend?: Backend;
  readonly interface?: string;
  /** The Docker network a probe finding is about. */
  readonly network?: string;
  /** Our ipset the finding is about (its set rule, or the set itself). */
  readonly set?: string;
  readonly endpoint?: string;
  /** Lines read from the host that show the finding (rules as iptables-save prints them, file facts). */
  readonly evidence: readonly string[];
  readonly remediation?: string;
}

/** Check ids: one per question the audit answers. */
export const CHECK = {
  protection: 'IG-101',
  chain: 'IG-102',
  ruleAltered: 'IG-103',
  ruleUnknown: 'IG-104',
  ruleOrder: 'IG-105',
  set: 'IG-106',
  setMember: 'IG-107',
  jump: 'IG-201',
  jumpDuplicate: 'IG-202',
  undermining: 'IG-301',
  seedDuplicate: 'IG-302',
  otherBackend: 'IG-303',
  bootScript: 'IG-401',
  localService: 'IG-402',
  family: 'IG-501',
  backend: 'IG-502',
  conntrack: 'IG-503',
  docker: 'IG-504',
  probe: 'IG-701',
  probeNotProbed: 'IG-702',
  probeError: 'IG-703',
} as const;

export function isDrift(f: Finding): boolean {
  return f.status === 'fail';
}

/** The protection verdict: any drift (or missing protection) means exit 1. */
export function hasDrift(findings: readonly Finding[]): boolean {
  return findings.some(isDrift);
}

/** A finding's identity across passes, so the daemon logs a drift once when it appears, not every check. */
export function findingKey(f: Finding): string {
  return [f.id, f.kind, f.family ?? '', f.backend ?? '', f.interface ?? '', f.endpoint ?? '', f.evidence.join('|')].join('\u0000');
}
