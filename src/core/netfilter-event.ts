import type { Family } from './family.js';
import { NAT_CHAIN } from './names.js';

/**
 * One change that a netfilter monitor reported, reduced to where it happened. Two
 * monitors can report them: `nft monitor` (nftables), which names every object exactly:
 *   `add rule ip nat PREROUTING counter packets 0 bytes 0 jump IMDS-GUARD`
 *   `delete rule ip6 nat IMDS-GUARD handle 2`, `add chain ip filter FORWARD { ... policy drop; }`
 *   `add table inet b`, `add element inet b s { 1.2.3.4 }`, `# new generation 5 by process ...`
 * and `xtables-monitor --event` (iptables), which needs no extra package but can name less.
 *
 * xtables-monitor (Debian's iptables, nf_tables backend) listens to every nf_tables
 * change in its network namespace, native `nft` tables included, and prints one
 * ` EVENT: ` line per object. What it can name depends on what it can translate
 * (lines captured with iptables 1.8.9; see test/unit/netfilter-event.test.ts):
 *   ` EVENT: -4 -t nat -A PREROUTING -j IMDS-GUARD`        a rule (-A added, -D deleted; -I shows as -A)
 *   ` EVENT: -6 -t nat -N IMDS-GUARD`                     a user chain added (also a rename's new name) or -X deleted
 *   ` EVENT: # nft: ip nat PREROUTING use 1 type nat hook prerouting prio -100 policy accept ...`
 *                                                         a base chain added or its policy changed
 *   ` EVENT: nft: NEW table: table nat ip flags 0 use 1 handle 1`  a table added (DEL: deleted)
 *   ` EVENT: `                                            a native nft rule it cannot translate
 *                                                         (notrack, ebtables rules): where is unknown
 * Every transaction ends with `NEWGEN: GENID=.. PID=.. NAME=..`, which names no object.
 */
export interface NetfilterChange {
  /** The table's name, or null when the monitor could not say. */
  readonly table: string | null;
  /** The chain, or null for a table-level change or when the monitor could not say. */
  readonly chain: string | null;
  /** `null`: both (an `inet` table) or not known. `other`: arp, bridge or netdev, which carry no IP nat. */
  readonly family: Family | 'other' | null;
}

const EVENT_PREFIX = /^\s*EVENT:\s?/;
// `-4 -t TABLE -A|-D|-N|-X CHAIN ...`: -4/-6 are the IP families, -0 is arptables.
const RULE_OR_CHAIN = /^-([046]) -t (\S+) -[ADNXIRPEFZ] (\S+)/;
// `# nft: FAMILY TABLE CHAIN use N [type ... hook ...]`
const NFT_CHAIN = /^# nft: (\S+) (\S+) (\S+)(?:\s|$)/;
// `nft: NEW table: table NAME FAMILY flags ...` (and DEL)
const NFT_TABLE = /^nft: (?:NEW|DEL) table: table (\S+) (\S+)(?:\s|$)/;

const FAMILY_FLAG: Record<string, Family | 'other'> = { '4': 'ipv4', '6': 'ipv6', '0': 'other' };

function nftFamily(name: string): Family | 'other' | null {
  if (name === 'ip') return 'ipv4';
  if (name === 'ip6') return 'ipv6';
  if (name === 'inet') return null;
  return 'other';
}

export type MonitorTool = 'nft-monitor' | 'xtables-monitor';

const NFT_FAMILIES: Readonly<Record<string, Family | 'other' | null>> = { ip: 'ipv4', ip6: 'ipv6', inet: null, arp: 'other', bridge: 'other', netdev: 'other' };
// `VERB OBJECT FAMILY TABLE [CHAIN-OR-NAME] ...`
const NFT_EVENT = /^(?:add|create|insert|replace|delete|destroy|update|flush|reset) (\S+) (\S+)(?: (\S+))?(?: (\S+))?/;

/** Parses one line of `nft monitor`; null for lines that report no change (`# new generation`, blank). */
export function parseNftMonitorLine(line: string): NetfilterChange | null {
  const text = line.trim();
  if (text === '' || text.startsWith('#')) return null;
  const m = NFT_EVENT.exec(text);
  const family = m === null ? undefined : NFT_FAMILIES[m[2]!];
  // Not a shape we know (or `ct helper ...`, whose family comes later): it happened somewhere.
  if (m === null || family === undefined || m[3] === undefined) return { table: null, chain: null, family: null };
  const inChain = m[1] === 'chain' || m[1] === 'rule';
  return { table: m[3], chain: inChain ? (m[4] ?? null) : null, family };
}

/** Parses one line of `xtables-monitor --event`; null for lines that report no change (NEWGEN, blank). */
export function parseMonitorLine(line: string): NetfilterChange | null {
  if (!EVENT_PREFIX.test(line)) return null;
  const body = line.replace(EVENT_PREFIX, '').trim();
  const rule = RULE_OR_CHAIN.exec(body);
  if (rule !== null) return { table: rule[2]!, chain: rule[3]!, family: FAMILY_FLAG[rule[1]!] ?? null };
  const chain = NFT_CHAIN.exec(body);
  if (chain !== null) return { table: chain[2]!, chain: chain[3]!, family: nftFamily(chain[1]!) };
  const table = NFT_TABLE.exec(body);
  if (table !== null) return { table: table[1]!, chain: null, family: nftFamily(table[2]!) };
  // An object the monitor could not render (a native nft rule): it happened somewhere.
  return { table: null, chain: null, family: null };
}

// The chains that matter in the iptables tables we read or own: where our jump sits
// (PREROUTING), where a foreign rule could undo it for the host's own traffic (OUTPUT),
// where forwarded traffic is let through or refused (FORWARD), and our own chains.
// raw counts too: `-j CT --notrack` there makes a packet skip the nat table entirely.
const WATCHED_TABLES = new Set(['nat', 'filter', 'raw']);
const WATCHED_CHAINS = new Set(['PREROUTING', 'OUTPUT', 'FORWARD']);
// Tables iptables-nft creates; a table not among them is native nft (firewalld, a script),
// where a base chain hooked before dstnat can bypass nat: any change there counts.
const XTABLES_TABLES = new Set(['nat', 'filter', 'raw', 'mangle', 'security']);

/** Whether a change can have undone our protection or added a bypass: the pass runner should look. */
export function isRelevantChange(c: NetfilterChange): boolean {
  if (c.family === 'other') return false;
  // An inet table is native nft (iptables-nft makes ip and ip6 tables only), and a line
  // the monitor could not render may be anywhere: neither can be ruled out.
  if (c.family === null || c.table === null) return true;
  if (!XTABLES_TABLES.has(c.table)) return true;
  if (!WATCHED_TABLES.has(c.table)) return false; // mangle, security: they neither translate nor bypass nat
  if (c.chain === null) return true; // the table itself came or went (`nft flush ruleset`)
  return WATCHED_CHAINS.has(c.chain) || c.chain.startsWith(NAT_CHAIN);
}

/**
 * Whether a change may be in a native nftables table (not one iptables-nft makes): the
 * agent's cheap read does not look there, so such a wake-up asks for a full read. A line
 * the monitor could not place may be anywhere, so it counts.
 */
export function isNativeChange(c: NetfilterChange): boolean {
  if (c.family === 'other') return false;
  return c.table === null || c.family === null || !XTABLES_TABLES.has(c.table);
}

/** The change a monitor line reports when it is one the pass runner should wake for, else null. */
export function classifyMonitorLine(line: string, tool: MonitorTool = 'xtables-monitor'): NetfilterChange | null {
  const c = tool === 'nft-monitor' ? parseNftMonitorLine(line) : parseMonitorLine(line);
  return c !== null && isRelevantChange(c) ? c : null;
}
