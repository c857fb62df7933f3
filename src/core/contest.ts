import { type Finding, isDrift } from './findings.js';

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

// Five times in a minute: a human fixing something by hand twice, or a flush and a
// reload, stays below it; a loop or a controller with a sub-minute resync does not.
export const DEFAULT_CONTEST_RULE: ContestRule = { repeats: 5, withinMs: 60_000 };

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
