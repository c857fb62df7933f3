import { type Backend, FAMILIES, type Family } from './family.js';
import { FORWARD_CHAIN, NAT_CHAIN, OUTPUT_CHAIN } from './names.js';
import type { Observation } from './plan.js';
import type { SavedTable, TableName } from './saved-table.js';

/** The chains whose rules decide whether a converged host is still protected, per table. */
export const DECIDING: readonly { readonly table: TableName; readonly chains: readonly string[] }[] = [
  { table: 'nat', chains: ['PREROUTING', NAT_CHAIN] },
  // DOCKER-USER: Docker moves its jump to the top of FORWARD on every network it creates,
  // above ours; listing it lets the cheap read judge it harmless (it only returns)
  // instead of escalating every check to a full read.
  { table: 'filter', chains: ['FORWARD', FORWARD_CHAIN, 'OUTPUT', OUTPUT_CHAIN, 'DOCKER-USER'] },
  // A NOTRACK for an endpoint skips NAT altogether: a bypass must not wait for a full read.
  { table: 'raw', chains: ['PREROUTING'] },
];

/**
 * A table the last full read found this small is listed whole (`iptables -t T -S`, one
 * process) rather than chain by chain (one process a chain): below this, a process costs
 * more than the rules it would skip. Docker's filter and raw tables stay far below it
 * (a few rules a network); the nat table of a host with thousands of published ports or
 * a Kubernetes node does not, and is then read chain by chain.
 */
export const WHOLE_TABLE_MAX_RULES = 500;

/** Per family, the deciding tables a cheap read lists in one process each. */
export type WholeTables = Readonly<Record<Family, readonly TableName[]>>;

/** How a cheap read reads: the backend, and per family what it takes in one process. */
export interface CheapRead {
  readonly backend: Backend;
  /** Tables to list whole per family, in one process each; default WHOLE_BY_DEFAULT. */
  readonly whole?: WholeTables;
  /** Families read with one save of every table (savedFamiliesOf); default none. */
  readonly saved?: readonly Family[];
}

/** What a cheap read lists whole when nothing is known of the tables' sizes (a one-shot `apply`). */
export const WHOLE_BY_DEFAULT: WholeTables = { ipv4: ['filter', 'raw'], ipv6: ['filter', 'raw'] };

/**
 * The deciding tables a cheap read may list whole, judged from a full read, per family:
 * each one that holds at most WHOLE_TABLE_MAX_RULES rules. Judged per family because the
 * families differ: a host with 10,000 published IPv4 ports usually has an IPv6 nat table
 * of a few rules, which one process lists whole instead of two listing its chains. A
 * family that could not be read (or is absent) says nothing, so its tables are read chain
 * by chain.
 */
export function wholeTablesOf(observation: Observation): { ipv4: TableName[]; ipv6: TableName[] } {
  const of = (family: Family): TableName[] => {
    const f = observation.families[family];
    if (!f.present || !f.ours.ok) return [];
    const tables = f.ours.tables;
    return DECIDING.map((d) => d.table).filter((table) => rulesIn(tables.get(table)) <= WHOLE_TABLE_MAX_RULES);
  };
  return { ipv4: of('ipv4'), ipv6: of('ipv6') };
}

/**
 * The families a cheap read may take in one save (`iptables-save`, every table of the
 * family, one process) instead of a listing per deciding table or chain: those whose
 * tables, all of them, the last full read found at most WHOLE_TABLE_MAX_RULES rules in
 * all. On most hosts that is IPv6 (Docker writes a few rules there), and every family of
 * a host without thousands of published ports: one process where the listings take three
 * or four, each of which under legacy fetches its whole table from the kernel anyway. A
 * save reads more than the deciding chains, never less. A family that could not be read
 * (or is absent) is not saved: its tables are listed.
 */
export function savedFamiliesOf(observation: Observation): Family[] {
  return FAMILIES.filter((family) => {
    const f = observation.families[family];
    return f.present && f.ours.ok && [...f.ours.tables.values()].reduce((n, t) => n + rulesIn(t), 0) <= WHOLE_TABLE_MAX_RULES;
  });
}

/** The rules of a table as a full read found them (a table it did not find: none). */
function rulesIn(table: SavedTable | undefined): number {
  return table === undefined ? 0 : [...table.lines.values()].reduce((n, l) => n + l.length, 0);
}

/**
 * Per wanted chain, the listing of a whole table (`-S` with no chain) as a listing of that
 * chain alone would read: the text when the table declares the chain (`-P` for a built-in,
 * `-N` for a user chain), null when it does not, as `-S CHAIN` fails for a missing chain.
 */
export function chainsOfTableListing(text: string, chains: readonly string[]): [chain: string, text: string | null][] {
  const declared = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^-[PN] (\S+)/.exec(line);
    if (m !== null) declared.add(m[1]!);
  }
  return chains.map((c) => [c, declared.has(c) ? text : null]);
}
