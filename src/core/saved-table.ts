import { type Rule, parseRuleArgs, splitArgs } from './rule.js';

/** The tables imds-guard reads: nat and filter hold what it owns; raw is read for bypasses (NOTRACK). */
export type TableName = 'nat' | 'filter' | 'raw';
export const TABLE_NAMES: readonly TableName[] = ['nat', 'filter', 'raw'];

/**
 * One table as read back from `iptables-save`. Rules are kept as text and parsed only
 * for the chains a pass looks at: a Docker host can carry tens of thousands of foreign
 * rules that a converged pass never needs to understand.
 */
export interface SavedTable {
  readonly name: TableName;
  /** Chain names in the order declared, built-in ones included. */
  readonly chains: readonly string[];
  /** Per chain, each rule's arguments after `-A CHAIN`, as printed (counters dropped). */
  readonly lines: ReadonlyMap<string, readonly string[]>;
}

/** A table that holds nothing (iptables-nft creates tables only when something is put in them). */
export const emptyTable = (name: TableName): SavedTable => ({ name, chains: [], lines: new Map() });

const parsed = new WeakMap<SavedTable, Map<string, readonly Rule[]>>();

/** Every table section of one `iptables-save` (all tables, or one with -t); comments and counters dropped. */
export function parseSave(save: string): Map<TableName, SavedTable> {
  const out = new Map<TableName, SavedTable>();
  let from = 0;
  for (;;) {
    const star = save.startsWith('*', from) ? from : save.indexOf('\n*', from) + 1;
    if (star <= 0 && !save.startsWith('*', from)) break;
    const nl = save.indexOf('\n', star);
    if (nl < 0) break;
    const name = save.slice(star + 1, nl).trim();
    const end = save.indexOf('\nCOMMIT', nl);
    const body = save.slice(nl + 1, end < 0 ? undefined : end);
    if ((TABLE_NAMES as readonly string[]).includes(name)) out.set(name as TableName, parseSection(name as TableName, body));
    if (end < 0) break;
    from = end + 7;
  }
  return out;
}

/** One table of an `iptables-save` text; empty when the save does not hold it. */
export function parseTable(save: string, name: TableName): SavedTable {
  return parseSave(save).get(name) ?? emptyTable(name);
}

// One pass over the section's lines, the fewest strings made per rule: a converged
// one-shot apply under legacy parses every rule of a 10k-rule save, cold (bench: cold parse).
function parseSection(name: TableName, body: string): SavedTable {
  const chains: string[] = [];
  const lines = new Map<string, string[]>();
  // iptables-save prints a chain's rules together: the list of the last chain is reused.
  let lastChain = '';
  let last: string[] | undefined;
  for (const raw of body.split('\n')) {
    const line = raw.trimEnd();
    const first = line.charCodeAt(0);
    if (first === 58 /* : */) {
      const sp = line.indexOf(' ');
      const chain = sp < 0 ? line.slice(1) : line.slice(1, sp);
      chains.push(chain);
      if (!lines.has(chain)) lines.set(chain, []);
      continue;
    }
    // Rules saved with -c carry a "[pkts:bytes]" prefix.
    const rule = first === 91 /* [ */ ? line.replace(/^\[\d+:\d+\]\s+/, '') : line;
    if (!rule.startsWith('-A ')) continue;
    const sp = rule.indexOf(' ', 3);
    const chain = sp < 0 ? rule.slice(3) : rule.slice(3, sp);
    if (chain !== lastChain || last === undefined) {
      last = lines.get(chain);
      if (last === undefined) lines.set(chain, (last = []));
      lastChain = chain;
    }
    last.push(sp < 0 ? '' : rule.slice(sp + 1));
  }
  return { name, chains, lines };
}

export function chainRules(table: SavedTable, chain: string): readonly Rule[] {
  let cache = parsed.get(table);
  if (cache === undefined) parsed.set(table, (cache = new Map()));
  let rules = cache.get(chain);
  if (rules === undefined) {
    rules = (table.lines.get(chain) ?? []).map((l) => parseRuleArgs(chain, splitArgs(l)));
    cache.set(chain, rules);
  }
  return rules;
}

export function ruleCount(table: SavedTable): number {
  let n = 0;
  for (const l of table.lines.values()) n += l.length;
  return n;
}

/** Chains holding a rule whose text jumps to `target`, found without parsing every rule. */
export function chainsJumpingTo(table: SavedTable, target: string): string[] {
  const needle = new RegExp(`(^|\\s)-[jg] ${target.replace(/[-]/g, '\\-')}(\\s|$)`);
  return [...table.lines].filter(([, ls]) => ls.some((l) => needle.test(l))).map(([c]) => c);
}

export function hasChain(table: SavedTable, chain: string): boolean {
  return table.chains.includes(chain);
}

/**
 * A partial table from `iptables -S CHAIN` listings (`-P`/`-N` declarations and `-A`
 * rules): only the chains listed, so a pass over it can decide "converged" for what it
 * holds and nothing else. A chain whose listing is null is absent.
 */
export function parseListing(name: TableName, listings: readonly (readonly [chain: string, text: string | null])[]): SavedTable {
  const chains: string[] = [];
  const lines = new Map<string, string[]>();
  for (const [chain, text] of listings) {
    if (text === null) continue;
    chains.push(chain);
    const rules: string[] = [];
    lines.set(chain, rules);
    for (const raw of text.split('\n')) {
      const line = raw.trimEnd();
      if (line.startsWith(`-A ${chain} `)) rules.push(line.slice(chain.length + 4));
    }
  }
  return { name, chains, lines };
}
