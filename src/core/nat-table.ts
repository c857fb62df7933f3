import { type Rule, parseRuleArgs, splitArgs } from './rule.js';

/** The nat table as read back from one `iptables-save -t nat`. */
export interface NatTable {
  /** Chain names in the order declared, built-in ones included. */
  readonly chains: readonly string[];
  readonly rules: ReadonlyMap<string, readonly Rule[]>;
  /** Lines of the table section, without comments and counters: what "byte-identical" compares. */
  readonly canonical: string;
}

export const EMPTY_NAT: NatTable = { chains: [], rules: new Map(), canonical: '' };

/**
 * Parses the `*nat` section of iptables-save output. Anything outside it (other
 * tables, `#` comments) is ignored; counters are dropped.
 */
export function parseNatTable(save: string): NatTable {
  const chains: string[] = [];
  const rules = new Map<string, Rule[]>();
  const canonical: string[] = [];
  let inNat = false;
  for (const raw of save.split('\n')) {
    const line = raw.trimEnd();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      inNat = line === '*nat';
      continue;
    }
    if (!inNat) continue;
    if (line === 'COMMIT') {
      inNat = false;
      continue;
    }
    if (line.startsWith(':')) {
      const [name = '', policy = '-'] = line.slice(1).split(' ');
      chains.push(name);
      if (!rules.has(name)) rules.set(name, []);
      canonical.push(`:${name} ${policy}`);
      continue;
    }
    // Rules saved with -c carry a "[pkts:bytes]" prefix.
    const body = line.replace(/^\[\d+:\d+\]\s+/, '');
    if (!body.startsWith('-A ')) continue;
    const args = splitArgs(body);
    const chain = args[1] ?? '';
    const rule = parseRuleArgs(chain, args.slice(2));
    if (!rules.has(chain)) rules.set(chain, []);
    rules.get(chain)!.push(rule);
    canonical.push(body);
  }
  return { chains, rules, canonical: canonical.join('\n') };
}

export function chainRules(table: NatTable, chain: string): readonly Rule[] {
  return table.rules.get(chain) ?? [];
}

export function hasChain(table: NatTable, chain: string): boolean {
  return table.chains.includes(chain);
}
