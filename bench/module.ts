import type { AgentPart } from './agent.js';
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
  /** Rounds of the engine loop at the headline size (`rules`). */
  readonly runs: number;
  /** Rounds of the engine loop at the other sizes. */
  readonly sizeRuns: number;
  /** The headline size: DNAT rules in DOCKER the targets are judged on (one of `sizes`). */
  readonly rules: number;
  /** Every size the engine loop runs at. */
  readonly sizes: readonly number[];
  /** Tamper-to-repair samples per kind of tamper. */
  readonly tamperRuns: number;
  /** A tamper not repaired within this many ms is recorded as "> cap". */
  readonly tamperCapMs: number;
  /** The parts of the agent module to run (agent.ts). */
  readonly agentParts: readonly AgentPart[];
}

export interface ModuleOutcome {
  /** Everything measured, for bench/results/latest.json. */
  readonly result: unknown;
  /** The printed table. */
  readonly text: string;
  readonly targets: readonly Target[];
}

/**
 * One part of the bench (engine, breakdown, idle, tamper, agent). A module
 * throws only when something failed to run; a missed target is a result.
 */
export interface BenchModule {
  readonly name: string;
  readonly description: string;
  run(ctx: BenchContext): Promise<ModuleOutcome>;
}
