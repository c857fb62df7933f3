import type { Family } from './family.js';
import { CHECK, type Finding } from './findings.js';

/**
 * Bridges Docker reports under a custom name (no wildcard covers them) are matched
 * through an ipset, the way Calico Felix keeps endpoint membership out of its rules:
 * one fixed rule per endpoint (`-m set --match-set imds-guard-4 src,src`) and one set
 * member per interface. A new network is then a kernel hash insert by `ipset restore`,
 * with no nat-table rewrite and no xtables lock, so a burst of network creations runs
 * no iptables-restore at all and never waits behind Docker's own iptables calls.
 */
export const SET_NAME: Readonly<Record<Family, string>> = { ipv4: 'imds-guard-4', ipv6: 'imds-guard-6' };
export const SET_TYPE = 'hash:net,iface';
const SET_FAMILY: Readonly<Record<Family, string>> = { ipv4: 'inet', ipv6: 'inet6' };
// hash:net,iface takes the /0 prefix, so one member per interface matches every source.
const ANY_SOURCE: Readonly<Record<Family, string>> = { ipv4: '0.0.0.0/0', ipv6: '::/0' };

/** One set as `ipset save` prints it. */
export interface SavedSet {
  readonly name: string;
  readonly type: string;
  /** The `family` option of its create line (inet, inet6), or null when it has none. */
  readonly family: string | null;
  readonly createLine: string;
  /** Members exactly as saved, e.g. `0.0.0.0/0,br-custom`. */
  readonly members: readonly string[];
}

/** Parses `ipset save` output: `create NAME TYPE opts...` and `add NAME MEMBER [opts]` lines. */
export function parseIpsetSave(text: string): Map<string, SavedSet> {
  const sets = new Map<string, { name: string; type: string; family: string | null; createLine: string; members: string[] }>();
  for (const raw of text.split('\n')) {
    const words = raw.trim().split(/\s+/);
    const [verb, name, value] = words;
    if (name === undefined || value === undefined) continue;
    if (verb === 'create') {
      const at = words.indexOf('family');
      sets.set(name, { name, type: value, family: at < 0 ? null : (words[at + 1] ?? null), createLine: raw.trim(), members: [] });
    } else if (verb === 'add') {
      sets.get(name)?.members.push(value);
    }
  }
  return sets;
}

/** The set member that makes the fixed set rule match traffic arriving on `iface`. */
export function memberFor(family: Family, iface: string): string {
  return `${ANY_SOURCE[family]},${iface}`;
}

/** The interface a member of ours stands for, or null when it is not of our form. */
export function interfaceOfMember(family: Family, member: string): string | null {
  const prefix = `${ANY_SOURCE[family]},`;
  return member.startsWith(prefix) ? member.slice(prefix.length) : null;
}

/**
 * ipset reads a member up to its comma and takes no wildcard without the `wildcard`
 * flag, so such names are given a rule of their own instead.
 */
export function canBeMember(iface: string): boolean {
  return !iface.includes(',') && !iface.endsWith('+');
}

export interface DesiredSet {
  readonly family: Family;
  readonly name: string;
  /** Interfaces to be members, sorted. */
  readonly interfaces: readonly string[];
}

export function desiredSet(family: Family, interfaces: readonly string[]): DesiredSet {
  return { family, name: SET_NAME[family], interfaces: [...interfaces].sort() };
}

export interface SetComparison {
  readonly findings: readonly Finding[];
  /** Interfaces whose member is in place now (before any repair). */
  readonly present: ReadonlySet<string>;
  /** The `ipset -exist restore` payload that brings the set to the desired state, or null. */
  readonly payload: string | null;
}

const addLine = (name: string, member: string): string => `add ${name} ${member}`;

/** The `ipset restore` line that creates our set of a family. */
export function createLine(family: Family): string {
  return `create ${SET_NAME[family]} ${SET_TYPE} family ${SET_FAMILY[family]}`;
}

/**
 * Desired vs saved set. Like our chain, our set holds exactly what the code says: a
 * member someone else added is drift and goes. A set of the wrong type cannot be in
 * use by our rule (ipset refuses to destroy a referenced set, so it was made anew), so
 * it is destroyed and created again in the same restore.
 */
export function compareSet(desired: DesiredSet, actual: SavedSet | null): SetComparison {
  const { family, name } = desired;
  const at = { family, set: name } as const;
  const findings: Finding[] = [];
  const wanted = new Map(desired.interfaces.map((i) => [memberFor(family, i), i]));
  const altered = actual !== null && (actual.type !== SET_TYPE || actual.family !== SET_FAMILY[family]);
  const members = actual === null || altered ? [] : actual.members;
  const present = new Set(members.flatMap((m) => (wanted.has(m) ? [wanted.get(m)!] : [])));
  const extra = members.filter((m) => !wanted.has(m));

  if (actual === null) {
    findings.push({ ...at, id: CHECK.set, kind: 'set-missing', status: 'fail', severity: 'high', message: `ipset ${name} is missing`, evidence: [], remediation: 'imds-guard apply' });
  } else if (altered) {
    findings.push({ ...at, id: CHECK.set, kind: 'set-altered', status: 'fail', severity: 'high', message: `ipset ${name} is not a ${SET_TYPE} set of family ${SET_FAMILY[family]}`, evidence: [actual.createLine], remediation: 'imds-guard apply (creates it again)' });
  }
  for (const m of extra) {
    const iface = interfaceOfMember(family, m);
    findings.push({ ...at, id: CHECK.setMember, kind: 'set-member-unknown', status: 'fail', severity: 'medium', message: `ipset ${name} holds a member imds-guard did not add`, ...(iface === null ? {} : { interface: iface }), evidence: [addLine(name, m)], remediation: 'imds-guard apply (removes it)' });
  }

  const lines: string[] = [];
  if (altered) lines.push(`destroy ${name}`);
  if (actual === null || altered) lines.push(createLine(family));
  for (const m of extra) lines.push(`del ${name} ${m}`);
  for (const [m, i] of wanted) if (!present.has(i)) lines.push(addLine(name, m));
  return { findings, present, payload: lines.length === 0 ? null : [...lines, ''].join('\n') };
}

/** The `ipset save` / `ipset restore` line of an interface's member (evidence, boot script). */
export function memberLine(family: Family, iface: string): string {
  return addLine(SET_NAME[family], memberFor(family, iface));
}
