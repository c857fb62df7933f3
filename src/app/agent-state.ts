import * as z from 'zod';
import type { AgentHistory } from '../core/report.js';
import type { FilesPort } from '../shell/files.js';

/** The agent's state file: what it verified and what drift it saw, for `audit` and `status`. */
export const STATE_FILE = 'state.json';
// Bounded so a host that drifts every 30 s for a year does not grow the file without end.
export const MAX_RECENT_DRIFT = 200;

const stateSchema = z.object({
  version: z.literal(1),
  pid: z.number(),
  startedAt: z.string(),
  lastReconcileAt: z.string().nullable(),
  lastResult: z.enum(['converged', 'repaired', 'drift', 'error']).nullable(),
  lastError: z.string().nullable(),
  driftCounts: z.record(z.string(), z.number()),
  recentDrift: z.array(z.object({ at: z.string(), kind: z.string(), message: z.string(), repaired: z.boolean() })),
  // Added later: a state file written before it reads as no contest.
  contests: z
    .array(z.object({ signature: z.string(), repairs: z.number(), firstAt: z.string(), lastAt: z.string(), kinds: z.array(z.string()), evidence: z.array(z.string()) }))
    .default([]),
});

export type AgentState = z.infer<typeof stateSchema>;
/** What the agent writes: every field, contests included. */
export type AgentStateInput = z.input<typeof stateSchema>;

export async function readAgentState(files: FilesPort, stateDir: string): Promise<AgentState | null> {
  const f = await files.read(`${stateDir}/${STATE_FILE}`);
  if (f === null) return null;
  try {
    const parsed = stateSchema.safeParse(JSON.parse(f.content));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export async function writeAgentState(files: FilesPort, stateDir: string, state: AgentState): Promise<void> {
  await files.writeAtomic(`${stateDir}/${STATE_FILE}`, `${JSON.stringify(state, null, 2)}\n`, 0o644);
}

export function historyOf(s: AgentState): AgentHistory {
  return { startedAt: s.startedAt, lastReconcileAt: s.lastReconcileAt, lastResult: s.lastResult, lastError: s.lastError, driftCounts: s.driftCounts, recentDrift: s.recentDrift, contests: s.contests };
}
