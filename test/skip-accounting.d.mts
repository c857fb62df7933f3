/** A skipped test or suite, as test/reporter.mjs saw it. */
export interface SkipRecord {
  readonly file: string | null;
  readonly name: string;
  /** '' when none was given (`skip: true`, `t.skip()`). */
  readonly reason: string;
  readonly suite: boolean;
}

/** One line of test/allowed-skips.txt. */
export interface AllowedSkip {
  readonly pattern: RegExp;
  readonly source: string;
  readonly why: string;
  readonly line: number;
}

export function parseAllowList(text: string): AllowedSkip[];
export function judgeSkips(skips: readonly SkipRecord[], rules: readonly AllowedSkip[]): { allowed: { skip: SkipRecord; rule: AllowedSkip }[]; refused: SkipRecord[] };
export function describeSkips(skips: readonly SkipRecord[], root: string): string[];
export function nameSkip(s: SkipRecord, root: string): string;
