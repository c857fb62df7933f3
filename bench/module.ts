import type { Target } from './stats.js';

/** What every part of the bench gets from run.ts. */
export interface BenchContext {
  /** Absolute path of the built CLI (dist/cli.js). */
  readonly cli: string;
  readonly repo: string;
  readonly args: BenchArgs;
  /** Progress goes to stderr, so stdout holds only the tables. */
  readonly progress: (line: string) => void;
}

export interface BenchArgs {
  readonly backends: readonly ('nft' | 'legacy')[];
  readonly runs: number;
  readonly sideRuns: number;
  readonly unprotectedRuns: number;
  readonly rules: number;
}

export interface ModuleOutcome {
  /** Everything measured, for bench/results/latest.json. */
  readonly result: unknown;
  /** The printed table. */
  readonly text: string;
  readonly targets: readonly Target[];
}

/**
 * One part of the bench (engine now; the agent daemon in the Docker lab later). A module
 * throws only when something failed to run; a missed target is a result.
 */
export interface BenchModule {
  readonly name: string;
  readonly description: string;
  run(ctx: BenchContext): Promise<ModuleOutcome>;
}
