import type { Family } from './family.js';

/**
 * What one reconcile pass tells the metrics, as plain data: the agent builds it from its
 * pass result and hands it to `Metrics.recordPass`. Nothing here knows prom-client.
 */
export interface PassSample {
  /** false when the pass threw: only its duration and the pass counter are recorded then. */
  readonly ok: boolean;
  readonly durationSeconds: number;
  /** When the pass started; the last successful pass time is this. */
  readonly at: Date;
  /** Each configured family as the host stands at the end of the pass (after any repair). */
  readonly families: readonly { readonly family: Family; readonly protected: boolean }[];
  /** Every finding of the pass (pass, info, warn and fail): the gauge is their count per id, severity and status. */
  readonly findings: readonly { readonly id: string; readonly severity: string; readonly status: string }[];
  /** One entry per drift event the agent counted in this pass (its `fresh` drift), kinds repeating as often as they happened. */
  readonly driftKinds: readonly string[];
  /** The pass wrote the host back to the protected state. */
  readonly repaired: boolean;
  /** Docker's networks, each with the word for how it is covered (the lead's coverage model names them). */
  readonly networks: readonly { readonly coverage: string }[];
  readonly hostContainers: readonly { readonly coverage: string }[];
}

/** One endpoint tried from one network by `audit --probe` (or the agent's probe schedule). */
export interface ProbeSample {
  readonly network: string;
  readonly endpoint: string;
  /** Refused or timed out: the endpoint cannot be reached from there. */
  readonly blocked: boolean;
}

/** One series of a labelled gauge: its label values and its value. */
export interface GaugeSeries<L extends string> {
  readonly labels: Readonly<Record<L, string>>;
  readonly value: number;
}

/** How many items carry each combination of the named fields, in first-seen order. */
export function tally<K extends string>(items: readonly Readonly<Record<K, string>>[], keys: readonly K[]): GaugeSeries<K>[] {
  const series = new Map<string, { labels: Record<K, string>; value: number }>();
  for (const item of items) {
    const labels = Object.fromEntries(keys.map((k) => [k, item[k]])) as Record<K, string>;
    // JSON of the values in key order: no separator a Docker name could contain can make two combinations collide.
    const key = JSON.stringify(keys.map((k) => item[k]));
    const seen = series.get(key);
    if (seen === undefined) series.set(key, { labels, value: 1 });
    else seen.value += 1;
  }
  return [...series.values()];
}

/** 1 per family that is protected, 0 per family that is not; a family named twice counts as protected only if every mention says so. */
export function protectedSeries(families: PassSample['families']): GaugeSeries<'family'>[] {
  const byFamily = new Map<Family, boolean>();
  for (const f of families) byFamily.set(f.family, (byFamily.get(f.family) ?? true) && f.protected);
  return [...byFamily].map(([family, ok]) => ({ labels: { family }, value: ok ? 1 : 0 }));
}

/**
 * 1 = blocked, 0 = connected, per network and endpoint. A pair probed twice in one run is
 * blocked only if every probe was: one open connection is enough to call it reachable.
 */
export function probeSeries(results: readonly ProbeSample[]): GaugeSeries<'network' | 'endpoint'>[] {
  const byPair = new Map<string, { labels: { network: string; endpoint: string }; value: number }>();
  for (const r of results) {
    const key = JSON.stringify([r.network, r.endpoint]);
    const value = r.blocked ? 1 : 0;
    const seen = byPair.get(key);
    if (seen === undefined) byPair.set(key, { labels: { network: r.network, endpoint: r.endpoint }, value });
    else seen.value = Math.min(seen.value, value);
  }
  return [...byPair.values()];
}

/** Unix time in seconds with millisecond precision, the unit Prometheus' `time()` compares with. */
export function unixSeconds(at: Date): number {
  return at.getTime() / 1000;
}
