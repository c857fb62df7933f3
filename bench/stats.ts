/** Wall times of repeated runs of one measurement, in ms. */
export interface Stat {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly samples: readonly number[];
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function stat(samples: readonly number[]): Stat {
  const r = samples.map((x) => round(x));
  return { median: round(median(samples)), min: Math.min(...r), max: Math.max(...r), samples: r };
}

export function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** A measurement next to the baseline sampled in the same loop (interleaved), and their ratio. */
export interface Paired {
  readonly run: Stat;
  readonly baseline: Stat;
  /** Median over median: the figure targets are judged on. */
  readonly ratio: number;
  /** Fastest over fastest: less moved by other load on the machine, shown next to it. */
  readonly ratioOfMinima: number;
}

export function paired(run: readonly number[], baseline: readonly number[]): Paired {
  return { run: stat(run), baseline: stat(baseline), ratio: round(median(run) / median(baseline), 2), ratioOfMinima: round(Math.min(...run) / Math.min(...baseline), 2) };
}

export interface Target {
  readonly id: string;
  readonly what: string;
  readonly target: string;
  readonly value: string;
  readonly met: boolean;
}
