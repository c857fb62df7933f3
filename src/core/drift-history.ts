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
 * A Docker network created since the last pass needs new rules (and a new boot script),
 * and one removed leaves its rules behind; that is coverage changing, not someone
 * undoing our work. Splits those findings off so they are logged as coverage and not
 * counted as drift.
 */
export function splitNewCoverage(findings: readonly Finding[], previous: ReadonlySet<string> | null, interfaces: readonly string[]): { drift: Finding[]; coverage: Finding[] } {
  if (previous === null) return { drift: [...findings], coverage: [] };
  const added = new Set(interfaces.filter((i) => !previous.has(i)));
  const removed = new Set([...previous].filter((i) => !interfaces.includes(i)));
  const changed = added.size > 0 || removed.size > 0;
  const isCoverage = (f: Finding): boolean =>
    ((f.kind === 'rule-missing' || f.kind === 'set-member-missing') && f.interface !== undefined && added.has(f.interface)) ||
    ((f.kind === 'rule-unknown' || f.kind === 'set-member-unknown') && f.interface !== undefined && removed.has(f.interface)) ||
    // The set comes with the first custom-named bridge and its rules go with the last.
    (f.kind === 'set-missing' && added.size > 0) ||
    (f.kind === 'rule-unknown' && f.set !== undefined && f.interface === undefined && removed.size > 0) ||
    (f.kind === 'boot-script-stale' && changed);
  return { drift: findings.filter((f) => !isCoverage(f)), coverage: findings.filter(isCoverage) };
}

/**
 * On the agent's first pass, a family with no chain of ours at all is a first install,
 * not drift: nothing of ours was there to be undone. Its findings (and a missing boot
 * script, when nothing was installed anywhere) are split off so alerting on `drift`
 * does not fire on every new host. A family that had our chain is judged as usual.
 */
export function splitFirstInstall(findings: readonly Finding[]): { drift: Finding[]; install: Finding[] } {
  const fresh = new Set(findings.filter((f) => f.kind === 'chain-missing' && f.family !== undefined).map((f) => f.family));
  const families = new Set(findings.filter((f) => f.family !== undefined && f.kind !== 'family-unavailable' && f.kind !== 'other-backend').map((f) => f.family));
  const nothingAnywhere = families.size > 0 && [...families].every((f) => fresh.has(f));
  // Sets do not survive a reboot: a boot script run without the ipset tool leaves a rule
  // per interface, and the first pass folds those into a new set. That is installing the
  // set, not undoing it.
  const newSet = new Set(findings.filter((f) => f.kind === 'set-missing').map((f) => f.family));
  const isSetInstall = (f: Finding): boolean =>
    newSet.has(f.family) &&
    (f.kind === 'set-missing' || f.kind === 'set-member-missing' || (f.kind === 'rule-unknown' && f.interface !== undefined));
  const isInstall = (f: Finding): boolean =>
    f.kind !== 'other-backend' && (f.family !== undefined ? fresh.has(f.family) || isSetInstall(f) : nothingAnywhere && f.kind === 'boot-script-missing');
  return { drift: findings.filter((f) => !isInstall(f)), install: findings.filter(isInstall) };
}
