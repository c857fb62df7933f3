import { type Rule, parseRuleArgs, splitArgs } from './rule.js';

/**
 * The nat table as read back from one `iptables-save -t nat`. Rules are kept as text
 * and parsed only for the chains a pass looks at: a Docker host can carry tens of
 * thousands of foreign rules that a converged pass never needs to understand.
 */
export interface NatTable {
  /** Chain names in the order declared, built-in ones included. */
  readonly chains: readonly string[];
  /** Per chain, each rule's arguments after `-A CHAIN`, as printed. */
  readonly lines: ReadonlyMap<string, readonly string[]>;
  /** The table section without comments and counters: what "byte-identical" compares. */
  readonly canonical: string;
}

export const EMPTY_NAT: NatTable = { chains: [], lines: new Map(), canonical: '' };

const parsed = new WeakMap<NatTable, Map<string, readonly Rule[]>>();

/** Parses the `*nat` section of iptables-save output; other tables, comments and counters are dropped. */
export function parseNatTable(save: string): NatTable {
  const chains: string[] = [];
  const lines = new Map<string, string[]>();
  const canonical: string[] = [];
  const start = save.indexOf('*nat\n');
  if (start < 0) return EMPTY_NAT;
  const end = save.indexOf('\nCOMMIT', start);
  for (const raw of save.slice(start + 5, end < 0 ? undefined : end).split('\n')) {
    const line = raw.trimEnd();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith(':')) {
      const sp = line.indexOf(' ');
      const name = sp < 0 ? line.slice(1) : line.slice(1, sp);
      const policy = sp < 0 ? '-' : line.slice(sp + 1).split(' ')[0];
      chains.push(name);
      if (!lines.has(name)) lines.set(name, []);
      canonical.push(`:${name} ${policy}`);
      continue;
    }
    // Rules saved with -c carry a "[pkts:bytes]" prefix.
    const body = line.startsWith('[') ? line.replace(/^\[\d+:\d+\]\s+/, '') : line;
    if (!body.startsWith('-A ')) continue;
    const sp = body.indexOf(' ', 3);
    const chain = sp < 0 ? body.slice(3) : body.slice(3, sp);
    let list = lines.get(chain);
    if (list === undefined) lines.set(chain, (list = []));
    list.push(sp < 0 ? '' : body.slice(sp + 1));
    canonical.push(body);
  }
  return { chains, lines, canonical: canonical.join('\n') };
}

export function chainRules(table: NatTable, chain: string): readonly Rule[] {
  let cache = parsed.get(table);
  if (cache === undefined) parsed.set(table, (cache = new Map()));
  let rules = cache.get(chain);
  if (rules === undefined) {
    rules = (table.lines.get(chain) ?? []).map((l) => parseRuleArgs(chain, splitArgs(l)));
    cache.set(chain, rules);
  }
  return rules;
}

export function ruleCount(table: NatTable): number {
  let n = 0;
  for (const l of table.lines.values()) n += l.length;
  return n;
}

/** Chains holding a rule whose text jumps to `target`, found without parsing every rule. */
export function chainsJumpingTo(table: NatTable, target: string): string[] {
  const needle = new RegExp(`(^|\\s)-[jg] ${target.replace(/[-]/g, '\\-')}(\\s|$)`);
  return [...table.lines].filter(([, ls]) => ls.some((l) => needle.test(l))).map(([c]) => c);
}

export function hasChain(table: NatTable, chain: string): boolean {
  return table.chains.includes(chain);
}
