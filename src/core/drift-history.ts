import { type Finding, findingKey, isDrift } from './findings.js';

export interface DriftRecord {
  readonly at: string;
  readonly kind: string;
  readonly message: string;
  readonly repaired: boolean;
}

/** What the agent remembers of drift across passes. */
export interface DriftHistory {
  readonly counts: Readonly<Record<string, number>>;
  readonly recent: readonly DriftRecord[];
  /** Drift still in place after the last pass (report mode, or a failed repair). */
  readonly open: ReadonlySet<string>;
}

export const EMPTY_HISTORY: DriftHistory = { counts: {}, recent: [], open: new Set() };

/**
 * Folds one pass's findings into the history. A drift is new (logged and counted) when
 * it was not already open: in enforce mode every repaired drift closes, so a rule that
 * is deleted again is counted again; in report mode a drift that stays is logged once.
 */
export function recordPass(h: DriftHistory, findings: readonly Finding[], repaired: boolean, at: string, maxRecent: number): { history: DriftHistory; fresh: Finding[] } {
  const drift = findings.filter(isDrift);
  const fresh = drift.filter((f) => !h.open.has(findingKey(f)));
  const counts = { ...h.counts };
  for (const f of fresh) counts[f.kind] = (counts[f.kind] ?? 0) + 1;
  const recent = [...h.recent, ...fresh.map((f) => ({ at, kind: f.kind, message: f.message, repaired }))].slice(-maxRecent);
  const open = repaired ? new Set<string>() : new Set(drift.map(findingKey));
  return { history: { counts, recent, open }, fresh };
}

/**
 * On the agent's first pass, a chain of ours that is not there at all is a first
 * install, not drift: nothing of ours was there to be undone. Its findings (its jump and
 * rules missing, and a missing boot script when nothing was installed anywhere) are
 * split off so alerting on `drift` does not fire on every new host. A chain that was
 * there is judged as usual.
 */
export function splitFirstInstall(findings: readonly Finding[]): { drift: Finding[]; install: Finding[] } {
  const where = (f: Finding): string => `${f.family ?? ''}/${f.backend ?? ''}/${f.chain ?? ''}`;
  const fresh = new Set(findings.filter((f) => f.kind === 'chain-missing').map(where));
  const chains = new Set(findings.filter((f) => f.chain !== undefined && f.family !== undefined && f.kind !== 'other-backend' && f.kind !== 'bypass-nft' && f.table !== 'raw').map(where));
  const nothingAnywhere = chains.size > 0 && [...chains].every((c) => fresh.has(c));
  const isInstall = (f: Finding): boolean =>
    // A boot restores the parent rule without an inode; the first pass records the new one.
    f.kind === 'cgroup-stale' ||
    (f.kind === 'boot-script-missing' ? nothingAnywhere : (f.kind === 'chain-missing' || f.kind === 'jump-missing' || f.kind === 'rule-missing') && fresh.has(where(f)));
  return { drift: findings.filter((f) => !isInstall(f)), install: findings.filter(isInstall) };
}
