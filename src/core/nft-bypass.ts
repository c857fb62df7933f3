import { type Endpoint, formatEndpoint } from './endpoint.js';
import type { Backend } from './family.js';
import { CHECK, type Finding } from './findings.js';
import { type NftChain, type NftRule, type NftRuleset, ruleKey } from './nft-ruleset.js';
import { ipToBigInt, ipVersion } from './ip.js';
import { commandLine } from './shell-words.js';

/**
 * Native nftables chains that get around our nat protection. iptables-nft's nat
 * PREROUTING sits at priority dstnat (-100); a chain of someone else's table hooked
 * earlier at prerouting can
 * - switch connection tracking off for endpoint traffic (`notrack`): untracked packets
 *   never meet a nat rule (the filter backstop still refuses them), or
 * - be a nat chain (priority <= -100, so it may run first) that does its own dnat or
 *   redirect for the endpoint: the first nat binding wins, and ours never applies.
 * Pure: the ruleset and its listing in, findings out.
 */

/** What one full read learnt of the native ruleset. */
export type NativeNftRead =
  | {
      readonly ok: true;
      readonly ruleset: NftRuleset;
      /** `nft -a list ruleset` by ruleKey: the rules as nft prints them. */
      readonly listing: ReadonlyMap<string, string>;
    }
  | {
      readonly ok: false;
      /** nft is not installed (iptables-nft does not need it). */
      readonly missing: boolean;
      readonly why: string;
    };

// iptables-nft's nat PREROUTING: a nat chain at this priority or earlier may take the
// binding first; a notrack before it skips it.
const DSTNAT = -100;
// How deep jumps into regular chains are followed before a rule is assumed to be reached.
const MAX_DEPTH = 16;
// Layer-4 protocols whose matches (and payload fields) rule out a TCP packet.
const NOT_TCP = new Set(['udp', 'udplite', 'sctp', 'dccp', 'icmp', 'icmpv6', 'ipv6-icmp', 'igmp', 'esp', 'ah', 'gre', 'comp']);
// Names safe to put in an nft command line: nft parses its arguments as one command, so a
// name with a blank or `;` would be a second command.
const NFT_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;

type Verdict = boolean | null;
type Action = 'notrack' | 'dnat' | 'redirect';

interface Hit {
  readonly base: NftChain;
  readonly rule: NftRule;
  readonly action: Action;
  readonly endpoint: Endpoint;
  /** The jumps from the base chain to the rule's chain, as rules (handles) along the way. */
  readonly via: readonly NftRule[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The findings of one read: a FAIL per rule and endpoint that bypasses or overrides the
 * nat protection; when the ruleset could not be read, a warning (nft not installed) or,
 * on an nft host, a FAIL (fail closed: the backend our rules are in could not be audited).
 */
export function nftBypassFindings(endpoints: readonly Endpoint[], read: NativeNftRead | undefined, backend: Backend): Finding[] {
  if (read === undefined || endpoints.length === 0) return [];
  if (!read.ok) {
    const fails = !read.missing && backend === 'nft';
    return [
      {
        id: CHECK.nftBypass,
        kind: 'table-unreadable',
        status: fails ? 'fail' : 'warn',
        severity: fails ? 'high' : 'low',
        backend: 'nft',
        message: read.missing
          ? 'nft (nftables) is not installed: native nftables tables were not checked for chains that skip or override the nat protection (the filter backstop still refuses untracked traffic)'
          : 'the native nftables ruleset could not be read: it was not checked for chains that skip or override the nat protection',
        evidence: [read.why],
        remediation: read.missing ? 'install nftables (Debian/Alpine package "nftables") so audit can read native tables' : 'make `nft -j list ruleset` work for this user, then imds-guard audit',
      },
    ];
  }
  return findHits(read.ruleset, endpoints).map((h) => finding(h, read.listing));
}

function findHits(rs: NftRuleset, endpoints: readonly Endpoint[]): Hit[] {
  const chainsOf = new Map<string, NftRule[]>();
  for (const r of rs.rules) {
    const k = `${r.family} ${r.table} ${r.chain}`;
    chainsOf.set(k, [...(chainsOf.get(k) ?? []), r]);
  }
  const hits: Hit[] = [];
  for (const base of rs.chains) {
    const wants = bypassActions(base);
    if (wants.length === 0) continue;
    for (const e of endpoints) {
      if (!familySees(base.family, e)) continue;
      const seen = new Set<string>();
      const walk = (chain: string, via: readonly NftRule[], depth: number): void => {
        const key = `${base.family} ${base.table} ${chain}`;
        if (seen.has(key) || depth > MAX_DEPTH) return;
        seen.add(key);
        for (const rule of chainsOf.get(key) ?? []) {
          if (mayMatch(rule, e, rs) === false) continue;
          for (const action of actionsOf(rule.expr)) if (wants.includes(action)) hits.push({ base, rule, action, endpoint: e, via });
          for (const target of jumpTargets(rule, e, rs)) walk(target, [...via, rule], depth + 1);
        }
      };
      walk(base.name, [], 0);
    }
  }
  return hits;
}

/** What a chain could do to get around our nat rule: only a base chain at prerouting, run before or with dstnat, can. */
function bypassActions(c: NftChain): Action[] {
  if (c.base === null || c.base.hook !== 'prerouting') return [];
  const wants: Action[] = [];
  if (c.base.prio < DSTNAT) wants.push('notrack');
  if (c.base.type === 'nat' && c.base.prio <= DSTNAT) wants.push('dnat', 'redirect');
  return wants;
}

/**
 * The native tables whose rules the audit must read, judged from their chains alone
 * (`nft -j list chains`, which costs a few milliseconds where listing tables or the
 * ruleset costs a fetch of every rule, iptables-nft's included): those with a base
 * chain that could get around our nat rule. Jumps never leave a table, so no other
 * table's rules can matter.
 */
export function tablesToRead(chains: readonly NftChain[]): { readonly family: NftChain['family']; readonly name: string }[] {
  const out = new Map<string, { family: NftChain['family']; name: string }>();
  for (const c of chains) if (bypassActions(c).length > 0) out.set(`${c.family} ${c.table}`, { family: c.family, name: c.table });
  return [...out.values()];
}

/** Whether nft reads `name` as one plain identifier: nft joins its arguments into one command, so only such a name may be passed. */
export function isPlainNftName(name: string): boolean {
  return NFT_NAME.test(name);
}

function finding(h: Hit, listing: ReadonlyMap<string, string>): Finding {
  const { base, rule, endpoint } = h;
  const b = base.base!;
  const where = `${base.family} ${base.table} ${base.name}, type ${b.type} hook prerouting priority ${b.prio}`;
  const text = (r: NftRule): string => listing.get(ruleKey(r.family, r.table, r.chain, r.handle)) ?? `rule handle ${r.handle} in chain ${r.chain} (not in the text listing read just after: it changed meanwhile)`;
  const to = formatEndpoint(endpoint);
  const message =
    h.action === 'notrack'
      ? `a native nftables chain (${where}) switches connection tracking off for metadata traffic to ${to}, so it skips the nat protection; the filter backstop (IG-110) still refuses it`
      : `a native nftables nat chain (${where}) does its own ${h.action} of metadata traffic to ${to} and may run before our nat rule, which then never applies; the filter backstop (IG-110) still refuses what keeps the endpoint as its destination, not what it sends elsewhere`;
  const evidence = [`table ${base.family} ${base.table} chain ${base.name} { type ${b.type} hook prerouting priority ${b.prio}; }`, ...h.via.map((r) => `${r.chain}: ${text(r)}`), `${rule.chain}: ${text(rule)}`];
  return {
    id: CHECK.nftBypass,
    kind: 'bypass-nft',
    status: 'fail',
    severity: h.action === 'notrack' ? 'high' : 'critical',
    family: endpoint.family,
    backend: 'nft',
    table: `${base.family} ${base.table}`,
    chain: rule.chain,
    endpoint: to,
    message,
    evidence,
    remediation: deleteRuleCommand(rule) ?? `remove it if it is not wanted (its table or chain name is not a plain nft name, so no command is printed): nft -a list table ${base.family} <table>, then nft delete rule ... handle ${rule.handle}`,
  };
}

/** `nft delete rule FAMILY TABLE CHAIN handle N`, quoted for a shell; null when a name is not one nft reads as a plain identifier. */
export function deleteRuleCommand(r: { readonly family: string; readonly table: string; readonly chain: string; readonly handle: number }): string | null {
  if (!['ip', 'ip6', 'inet'].includes(r.family) || !NFT_NAME.test(r.table) || !NFT_NAME.test(r.chain)) return null;
  if (!Number.isSafeInteger(r.handle) || r.handle <= 0) return null;
  return commandLine(['nft', 'delete', 'rule', r.family, r.table, r.chain, 'handle', String(r.handle)]);
}

function familySees(family: string, e: Endpoint): boolean {
  return family === 'inet' || (family === 'ip' ? e.family === 'ipv4' : e.family === 'ipv6');
}

/** The statements of a rule that take traffic around our nat rule. */
function actionsOf(expr: readonly unknown[]): Action[] {
  const out: Action[] = [];
  for (const x of expr) {
    if (!isObject(x)) continue;
    if ('notrack' in x) out.push('notrack');
    if ('dnat' in x) out.push('dnat');
    if ('redirect' in x) out.push('redirect');
  }
  return out;
}

/**
 * Chains a rule jumps or goes to for this endpoint: a plain verdict, or the entries of a
 * verdict map (anonymous or named) whose key may be the endpoint's.
 */
function jumpTargets(rule: NftRule, e: Endpoint, rs: NftRuleset): string[] {
  const out: string[] = [];
  for (const x of rule.expr) {
    if (!isObject(x)) continue;
    const vmap = isObject(x.vmap) ? x.vmap : null;
    const data = vmap === null ? null : typeof vmap.data === 'string' && vmap.data.startsWith('@') ? (rs.sets.find((s) => s.family === rule.family && s.table === rule.table && s.name === (vmap.data as string).slice(1))?.elem ?? null) : isObject(vmap.data) && Array.isArray(vmap.data.set) ? vmap.data.set : null;
    if (vmap === null || data === null) {
      out.push(...verdictTargets(x));
      continue;
    }
    for (const entry of data) {
      if (Array.isArray(entry) && entry.length === 2) {
        if (matchVerdict({ op: '==', left: vmap.key, right: entry[0] }, rule, e, rs) !== false) out.push(...verdictTargets(entry[1]));
      } else out.push(...verdictTargets(entry));
    }
  }
  return out;
}

/** Every jump or goto target anywhere inside one expression. */
function verdictTargets(v: unknown, depth = 0): string[] {
  if (depth > 12) return [];
  if (Array.isArray(v)) return v.flatMap((x) => verdictTargets(x, depth + 1));
  if (!isObject(v)) return [];
  return Object.entries(v).flatMap(([k, x]) => ((k === 'jump' || k === 'goto') && isObject(x) && typeof x.target === 'string' ? [x.target] : verdictTargets(x, depth + 1)));
}

/**
 * Whether the rule can match a new TCP connection to the endpoint: false only when one of
 * its matches rules it out (another address, port, protocol or family); a match we cannot
 * read (a map, a concatenation, a set we do not have) may match.
 */
export function mayMatch(rule: NftRule, e: Endpoint, rs: NftRuleset): Verdict {
  let verdict: Verdict = true;
  for (const x of rule.expr) {
    if (!isObject(x) || !isObject(x.match)) continue;
    const m = matchVerdict(x.match, rule, e, rs);
    if (m === false) return false;
    if (m === null) verdict = null;
  }
  return verdict;
}

function matchVerdict(m: Record<string, unknown>, rule: NftRule, e: Endpoint, rs: NftRuleset): Verdict {
  const op = m.op;
  const left = m.left;
  if (!isObject(left)) return null;
  const wantFamily = (p: string): boolean | null => (p === 'ip' ? e.family === 'ipv4' : p === 'ip6' ? e.family === 'ipv6' : null);
  if (isObject(left.payload)) {
    const protocol = left.payload.protocol;
    const field = left.payload.field;
    if (typeof protocol !== 'string') return null;
    // A payload match implies its protocol (nft adds the dependency): `udp dport != 53` is still UDP.
    if (NOT_TCP.has(protocol)) return false;
    if (wantFamily(protocol) === false) return false;
    if ((protocol === 'ip' || protocol === 'ip6') && field === 'daddr') return compare(op, contains(m.right, (v) => addressIn(v, e.address), rule, rs));
    if ((protocol === 'tcp' || protocol === 'th') && field === 'dport') return compare(op, contains(m.right, (v) => portIn(v, e.port), rule, rs));
    return null;
  }
  if (isObject(left.meta)) {
    const key = left.meta.key;
    if (key === 'l4proto') return compare(op, contains(m.right, isTcp, rule, rs));
    if (key === 'nfproto') return compare(op, contains(m.right, (v) => (v === 'ipv4' || v === 2 ? e.family === 'ipv4' : v === 'ipv6' || v === 10 ? e.family === 'ipv6' : null), rule, rs));
    return null;
  }
  return null;
}

const isTcp = (v: unknown): Verdict => (v === 'tcp' || v === 6 ? true : typeof v === 'string' || typeof v === 'number' ? false : null);

function compare(op: unknown, inSet: Verdict): Verdict {
  if (inSet === null) return null;
  if (op === '==' || op === 'in' || op === undefined) return inSet;
  if (op === '!=') return !inSet;
  return null;
}

/**
 * Whether the endpoint's value is among the match's right side: a single value, an
 * anonymous set, a prefix or range, or a named set of the rule's table (`@name`). Null
 * when something in it cannot be read.
 */
function contains(right: unknown, has: (v: unknown) => Verdict, rule: NftRule, rs: NftRuleset): Verdict {
  if (typeof right === 'string' && right.startsWith('@')) {
    const set = rs.sets.find((s) => s.family === rule.family && s.table === rule.table && s.name === right.slice(1));
    return set === undefined || set.elem === null ? null : anyOf(set.elem, has);
  }
  if (isObject(right) && Array.isArray(right.set)) return anyOf(right.set, has);
  return has(right);
}

function anyOf(elems: readonly unknown[], has: (v: unknown) => Verdict): Verdict {
  let unknown = false;
  for (const el of elems) {
    // A set element with a timeout or comment prints as {"elem": {"val": ...}}.
    const v = isObject(el) && isObject(el.elem) && 'val' in el.elem ? el.elem.val : el;
    const r = has(v);
    if (r === true) return true;
    if (r === null) unknown = true;
  }
  return unknown ? null : false;
}

function addressIn(v: unknown, address: string): Verdict {
  const fam = ipVersion(address);
  const value = (a: unknown): bigint | null => (typeof a === 'string' && ipVersion(a) === fam ? ipToBigInt(a) : null);
  const target = ipToBigInt(address);
  if (typeof v === 'string') {
    const a = value(v);
    return a === null ? (ipVersion(v) !== 0 ? false : null) : a === target;
  }
  if (!isObject(v)) return null;
  if (isObject(v.prefix)) {
    const { addr, len } = v.prefix;
    if (typeof addr === 'string' && ipVersion(addr) !== 0 && ipVersion(addr) !== fam) return false;
    const a = value(addr);
    const bits = fam === 4 ? 32 : 128;
    if (a === null || typeof len !== 'number' || !Number.isInteger(len) || len < 0 || len > bits) return null;
    const shift = BigInt(bits - len);
    return a >> shift === target >> shift;
  }
  if (Array.isArray(v.range) && v.range.length === 2) {
    const [lo, hi] = v.range.map(value);
    return lo === null || hi === null || lo === undefined || hi === undefined ? null : lo <= target && target <= hi;
  }
  return null;
}

function portIn(v: unknown, port: number): Verdict {
  if (typeof v === 'number') return v === port;
  if (typeof v === 'string') return /^\d+$/.test(v) ? Number(v) === port : v === 'http' ? port === 80 : v === 'https' ? port === 443 : null;
  if (isObject(v) && Array.isArray(v.range) && v.range.length === 2) {
    const [lo, hi] = v.range;
    return typeof lo === 'number' && typeof hi === 'number' ? lo <= port && port <= hi : null;
  }
  return null;
}
