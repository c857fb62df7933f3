import { CHECK, type Finding, isDrift } from './findings.js';

/**
 * Is someone fighting us? A foreign rule that keeps re-inserting itself above our jump
 * (Felix in insert mode, a script in a loop) shows up as the same repair over and over.
 * Plain data in, plain data out: the agent keeps the recent repairs, the audit reports a
 * contest as a finding of its own (with the foreign rule's evidence from the pass).
 */

/** One repair pass: when (ms, any monotonic or epoch scale) and what it repaired. */
export interface RepairRecord {
  readonly at: number;
  /** What was repaired, as `repairSignature` renders it: equal signatures, same repair. */
  readonly signature: string;
}

/** `repeats` identical repairs within `withinMs` make a contest. */
export interface ContestRule {
  readonly repeats: number;
  readonly withinMs: number;
}

// Five times in five minutes: a human fixing something by hand twice, or a flush and a
// reload, stays below it; a loop or a controller with a resync of a minute or less does
// not. Five minutes, not one: the pass runner's backoff slows identical repairs to one
// every 30 s (app/pass-runner), and a fight at that pace must stay a contest.
export const DEFAULT_CONTEST_RULE: ContestRule = { repeats: 5, withinMs: 5 * 60_000 };

export interface Contest {
  readonly signature: string;
  /** Identical repairs inside the window. */
  readonly repairs: number;
  readonly firstAt: number;
  readonly lastAt: number;
}

/** The signature of one pass's repairs: its finding keys, sorted and deduplicated; null when it repaired nothing. */
export function repairSignature(findingKeys: readonly string[]): string | null {
  if (findingKeys.length === 0) return null;
  return [...new Set(findingKeys)].sort().join('\n');
}

/**
 * The signature of the drift a pass repaired: which check, on what, not the evidence. A
 * fighter's rule that piles up (each insert leaves one more copy below our jump) changes
 * the evidence every time, but it is still the same repair.
 */
export function repairSignatureOf(findings: readonly Finding[]): string | null {
  return repairSignature(findings.filter(isDrift).map((f) => [f.id, f.kind, f.family ?? '', f.backend ?? '', f.table ?? '', f.chain ?? '', f.interface ?? '', f.endpoint ?? ''].join(' ')));
}

/** Appends a repair and drops what has left the window (the history stays bounded by the repair rate). */
export function recordRepair(history: readonly RepairRecord[], record: RepairRecord, rule: ContestRule = DEFAULT_CONTEST_RULE): RepairRecord[] {
  return [...history, record].filter((r) => record.at - r.at <= rule.withinMs);
}

/** Contests going on at `now`, most repairs first; empty when nobody is fighting. */
export function detectContests(history: readonly RepairRecord[], now: number, rule: ContestRule = DEFAULT_CONTEST_RULE): Contest[] {
  const bySignature = new Map<string, RepairRecord[]>();
  for (const r of history) {
    if (now - r.at > rule.withinMs || r.at > now) continue;
    bySignature.set(r.signature, [...(bySignature.get(r.signature) ?? []), r]);
  }
  const contests: Contest[] = [];
  for (const [signature, repairs] of bySignature) {
    if (repairs.length < rule.repeats) continue;
    const times = repairs.map((r) => r.at);
    contests.push({ signature, repairs: repairs.length, firstAt: Math.min(...times), lastAt: Math.max(...times) });
  }
  return contests.sort((a, b) => b.repairs - a.repairs || a.signature.localeCompare(b.signature));
}

/** A contest as the agent records it in its state file, for `audit` and `status`: times as ISO strings, with what was repaired and the foreign rules that undid it. */
export interface ContestRecord {
  readonly signature: string;
  readonly repairs: number;
  readonly firstAt: string;
  readonly lastAt: string;
  /** The drift kinds the repeated repair undid (jump-not-first, foreign-undermining, ...). */
  readonly kinds: readonly string[];
  /** Lines read from the tables in the last repaired pass: the foreign rules, as iptables-save prints them. */
  readonly evidence: readonly string[];
}

/** How long after its last repair a contest is still reported by `audit`: a fighter on a slow loop (a cron job every few minutes) is still a fighter. */
export const CONTEST_REPORT_MS = 15 * 60_000;
const OURS = /--comment "?imds-guard[: ]/;
// Evidence lines kept per contest: a fighter whose rule piles up would otherwise grow the state file each pass.
const MAX_EVIDENCE = 10;

/** What a repaired pass undid, for the contest's record: its drift kinds and evidence, deduplicated and bounded. */
export function repairDetails(findings: readonly Finding[]): { kinds: string[]; evidence: string[] } {
  const drift = findings.filter(isDrift);
  // Our own rules (by their comment) are not evidence of someone else's: the foreign ones are.
  const foreign = drift.flatMap((f) => f.evidence).filter((line) => !OURS.test(line));
  return { kinds: [...new Set(drift.map((f) => f.kind))].sort(), evidence: [...new Set(foreign)].slice(0, MAX_EVIDENCE) };
}

/**
 * The contests to keep in the state file: those going on now (with the details of their
 * last repair), and those that ended less than CONTEST_REPORT_MS ago, as last recorded.
 */
export function foldContests(
  kept: readonly ContestRecord[],
  active: readonly Contest[],
  details: (signature: string) => { kinds: readonly string[]; evidence: readonly string[] } | undefined,
  now: number,
): ContestRecord[] {
  const out = new Map<string, ContestRecord>();
  for (const k of kept) if (now - Date.parse(k.lastAt) <= CONTEST_REPORT_MS) out.set(k.signature, k);
  for (const c of active) {
    const before = out.get(c.signature);
    const d = details(c.signature) ?? { kinds: before?.kinds ?? [], evidence: before?.evidence ?? [] };
    // firstAt stays when the contest was already recorded: the window forgets its oldest repairs, the record does not.
    out.set(c.signature, { signature: c.signature, repairs: Math.max(c.repairs, before?.repairs ?? 0), firstAt: before?.firstAt ?? new Date(c.firstAt).toISOString(), lastAt: new Date(c.lastAt).toISOString(), kinds: [...d.kinds], evidence: [...d.evidence] });
  }
  return [...out.values()].sort((a, b) => b.lastAt.localeCompare(a.lastAt));
}

/**
 * The audit's finding for each contest the agent recorded within CONTEST_REPORT_MS of
 * `now`: a warning (the agent repairs every time, so the host is protected between the
 * undoing and the repair only after each repair), with the foreign rules as evidence.
 */
export function contestFindings(contests: readonly ContestRecord[], now: Date): Finding[] {
  return contests
    .filter((c) => now.getTime() - Date.parse(c.lastAt) <= CONTEST_REPORT_MS)
    .map((c) => ({
      id: CHECK.contest,
      kind: 'contest' as const,
      status: 'warn' as const,
      severity: 'high' as const,
      message: `someone keeps undoing the protection: the agent made the same repair (${c.kinds.join(', ') || 'drift'}) ${c.repairs} times between ${c.firstAt} and ${c.lastAt}; each time the endpoints were open until the repair`,
      evidence: c.evidence,
      remediation: 'find what keeps changing these rules (a firewall manager in insert mode, a script in a loop, a configuration tool) and make it leave the top of PREROUTING, FORWARD and OUTPUT and the IMDS-GUARD chains alone; the agent backs off but repairs every time',
    }));
}
