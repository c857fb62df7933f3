import * as z from 'zod';
import { TABLE_NAMES } from './saved-table.js';

/**
 * The native nftables ruleset as `nft -j list ruleset` prints it (JSON schema 1), read as
 * untrusted input: every object we rely on is validated, anything else is ignored. Only
 * what the bypass audit needs is kept (core/nft-bypass): tables, chains with their hook
 * and priority, rules with their handle and expressions (left as unknown JSON, judged
 * defensively), and named sets (a rule may match `ip daddr @name`).
 */

/** The nft families that carry IP traffic (arp, bridge and netdev carry no IP nat). */
export type NftFamily = 'ip' | 'ip6' | 'inet';
const IP_FAMILIES = new Set<string>(['ip', 'ip6', 'inet']);

export interface NftChain {
  readonly family: NftFamily;
  readonly table: string;
  readonly name: string;
  /** Present on a base chain: its type (filter, nat, route), hook and numeric priority. */
  readonly base: { readonly type: string; readonly hook: string; readonly prio: number } | null;
}

export interface NftRule {
  readonly family: NftFamily;
  readonly table: string;
  readonly chain: string;
  readonly handle: number;
  /** The rule's statements and matches, unvalidated: the classifier treats what it cannot read as "may match". */
  readonly expr: readonly unknown[];
}

export interface NftSet {
  readonly family: NftFamily;
  readonly table: string;
  readonly name: string;
  /** Elements as nft prints them (addresses, prefixes, ranges, ports); null when the set could not be read. */
  readonly elem: readonly unknown[] | null;
}

export interface NftRuleset {
  /** Tables not made by iptables-nft (see isXtablesTable), as `family name`. */
  readonly tables: readonly { readonly family: NftFamily; readonly name: string }[];
  readonly chains: readonly NftChain[];
  readonly rules: readonly NftRule[];
  readonly sets: readonly NftSet[];
  /**
   * The families in which iptables-nft has a table we read (nat, filter, raw): where
   * iptables-nft-save has something to say. Their chains and rules are left out above.
   */
  readonly xtables: readonly ('ip' | 'ip6')[];
}

// The tables iptables-nft creates (in the ip and ip6 families only); iptables-save reads
// them and the iptables checks audit them, so the native audit leaves them alone.
const XTABLES_TABLES = new Set(['filter', 'nat', 'raw', 'mangle', 'security']);
// The ones imds-guard reads.
const READ_XTABLES: ReadonlySet<string> = new Set(TABLE_NAMES);

export function isXtablesTable(family: string, name: string): boolean {
  return (family === 'ip' || family === 'ip6') && XTABLES_TABLES.has(name);
}

// nft prints priorities as numbers in JSON; a named one is accepted too, should a version print it.
const NAMED_PRIO: Readonly<Record<string, number>> = { raw: -300, mangle: -150, dstnat: -100, filter: 0, security: 50, srcnat: 100 };

const name = z.string().min(1).max(256);
const tableSchema = z.object({ family: z.string(), name });
const chainSchema = z.object({
  family: z.string(),
  table: name,
  name,
  type: z.string().optional(),
  hook: z.string().optional(),
  prio: z.union([z.number().int(), z.string()]).optional(),
});
const ruleSchema = z.object({ family: z.string(), table: name, chain: name, handle: z.number().int().positive(), expr: z.array(z.unknown()).optional() });
const setSchema = z.object({ family: z.string(), table: name, name, elem: z.array(z.unknown()).optional() });
const documentSchema = z.object({ nftables: z.array(z.record(z.string(), z.unknown())) });

function prioOf(p: number | string): number | null {
  if (typeof p === 'number') return p;
  const m = /^(raw|mangle|dstnat|filter|security|srcnat)\s*(?:([+-])\s*(\d+))?$/.exec(p.trim());
  if (m === null) return null;
  const offset = m[3] === undefined ? 0 : Number(m[3]) * (m[2] === '-' ? -1 : 1);
  return NAMED_PRIO[m[1]!]! + offset;
}

/**
 * Parses `nft -j list ruleset` (or `nft -j list tables`, which has tables only). Returns
 * a reason instead when the text is not that document, or when an object we rely on (a
 * table, chain or rule of an IP family) does not have the shape we know: a ruleset we
 * could not read whole was not checked, and the audit says so.
 */
export function parseNftRuleset(text: string): NftRuleset | string {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return 'nft printed no JSON';
  }
  const doc = documentSchema.safeParse(json);
  if (!doc.success) return 'nft printed JSON that is not a ruleset (no "nftables" list)';
  const tables: NftRuleset['tables'][number][] = [];
  const chains: NftChain[] = [];
  const rules: NftRule[] = [];
  const sets: NftSet[] = [];
  const xtables = new Set<'ip' | 'ip6'>();
  const seenXtables = (family: string, table: string): void => {
    if ((family === 'ip' || family === 'ip6') && READ_XTABLES.has(table)) xtables.add(family);
  };
  const foreign = (family: string, table: string): family is NftFamily => IP_FAMILIES.has(family) && !isXtablesTable(family, table);
  for (const item of doc.data.nftables) {
    if ('table' in item) {
      const t = tableSchema.safeParse(item.table);
      if (!t.success) return `nft printed a table we cannot read: ${JSON.stringify(item.table).slice(0, 200)}`;
      if (foreign(t.data.family, t.data.name)) tables.push({ family: t.data.family, name: t.data.name });
      seenXtables(t.data.family, t.data.name);
    } else if ('chain' in item) {
      const c = chainSchema.safeParse(item.chain);
      if (!c.success) return `nft printed a chain we cannot read: ${JSON.stringify(item.chain).slice(0, 200)}`;
      const d = c.data;
      seenXtables(d.family, d.table);
      if (!foreign(d.family, d.table)) continue;
      let base: NftChain['base'] = null;
      if (d.hook !== undefined) {
        const prio = d.prio === undefined ? null : prioOf(d.prio);
        if (prio === null) return `nft printed a base chain whose priority we cannot read: ${d.family} ${d.table} ${d.name} prio ${JSON.stringify(d.prio)}`;
        base = { type: d.type ?? 'filter', hook: d.hook, prio };
      }
      chains.push({ family: d.family, table: d.table, name: d.name, base });
    } else if ('rule' in item) {
      const r = ruleSchema.safeParse(item.rule);
      if (!r.success) return `nft printed a rule we cannot read: ${JSON.stringify(item.rule).slice(0, 200)}`;
      const d = r.data;
      if (foreign(d.family, d.table)) rules.push({ family: d.family, table: d.table, chain: d.chain, handle: d.handle, expr: d.expr ?? [] });
    } else if ('set' in item || 'map' in item) {
      // A set we cannot read is kept as unreadable: a rule that matches it then "may match".
      const raw = 'set' in item ? item.set : item.map;
      const s = setSchema.safeParse(raw);
      if (s.success && foreign(s.data.family, s.data.table)) sets.push({ family: s.data.family, table: s.data.table, name: s.data.name, elem: s.data.elem ?? [] });
      else if (!s.success) {
        const loose = z.object({ family: z.string(), table: name, name }).safeParse(raw);
        if (loose.success && foreign(loose.data.family, loose.data.table)) sets.push({ family: loose.data.family, table: loose.data.table, name: loose.data.name, elem: null });
      }
    }
  }
  return { tables, chains, rules, sets, xtables: [...xtables] };
}

/**
 * One table's part of a listing (`nft -j list table F T` prints that table only; what
 * else it holds is dropped, not trusted), the parts of several tables joined: the tables,
 * chains, rules and sets of `list ruleset` restricted to those tables.
 */
export function tablePart(rs: NftRuleset, family: string, name: string): NftRuleset {
  const mine = (x: { family: string; table: string }): boolean => x.family === family && x.table === name;
  return { tables: rs.tables.filter((t) => t.family === family && t.name === name), chains: rs.chains.filter(mine), rules: rs.rules.filter(mine), sets: rs.sets.filter(mine), xtables: rs.xtables.filter((f) => f === family && READ_XTABLES.has(name)) };
}

export function joinRulesets(parts: readonly NftRuleset[]): NftRuleset {
  return { tables: parts.flatMap((p) => p.tables), chains: parts.flatMap((p) => p.chains), rules: parts.flatMap((p) => p.rules), sets: parts.flatMap((p) => p.sets), xtables: [...new Set(parts.flatMap((p) => p.xtables))] };
}

/** The key of one rule in a listing: family, table, chain and handle. */
export function ruleKey(family: string, table: string, chain: string, handle: number): string {
  return [family, table, chain, String(handle)].join('\u0000');
}

const TABLE_LINE = /^table (\S+) (\S+) \{ # handle \d+$/;
const CHAIN_LINE = /^\s+chain (\S+) \{ # handle \d+$/;
const BLOCK_LINE = /^\s+(?:set|map|flowtable|counter|quota|limit|ct helper|ct timeout|ct expectation|secmark|synproxy) .*\{(?: # handle \d+)?$/;
const RULE_HANDLE = / # handle (\d+)$/;

/**
 * The rules of `nft -a list ruleset` (the text form, with handles) by ruleKey, each as nft
 * prints it: the evidence a finding shows. Only lines inside a chain block count, so a
 * set's elements are never taken for a rule; a name nft prints quoted does not match the
 * JSON's and its rules are simply not found (the finding then says so).
 */
export function parseNftListing(text: string): Map<string, string> {
  const rules = new Map<string, string>();
  let table: { family: string; name: string } | null = null;
  let chain: string | null = null;
  let otherBlock = false;
  for (const line of text.split('\n')) {
    const t = TABLE_LINE.exec(line);
    if (t !== null) {
      table = { family: t[1]!, name: t[2]! };
      chain = null;
      otherBlock = false;
      continue;
    }
    if (table === null) continue;
    if (otherBlock) {
      if (/^\s+\}$/.test(line)) otherBlock = false;
      continue;
    }
    const c = CHAIN_LINE.exec(line);
    if (c !== null) {
      chain = c[1]!;
      continue;
    }
    if (chain === null && BLOCK_LINE.test(line)) {
      otherBlock = true;
      continue;
    }
    if (/^\s+\}$/.test(line)) {
      chain = null;
      continue;
    }
    if (/^\}$/.test(line)) {
      table = null;
      continue;
    }
    const h = chain === null ? null : RULE_HANDLE.exec(line);
    if (h !== null && chain !== null) rules.set(ruleKey(table.family, table.name, chain, Number(h[1])), line.trim());
  }
  return rules;
}
