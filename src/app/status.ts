import type { Config } from '../core/config.js';
import { files } from '../shell/files.js';
import { readAgentState } from './agent-state.js';

/** For health checks: is there a running agent whose last pass succeeded within `maxAgeSeconds`? */
export async function agentStatus(config: Config, maxAgeSeconds: number, now: Date): Promise<{ ok: boolean; text: string }> {
  const s = await readAgentState(files, config.stateDir);
  if (s === null) return { ok: false, text: `imds-guard: no agent state in ${config.stateDir}` };
  const age = s.lastReconcileAt === null ? Infinity : (now.getTime() - Date.parse(s.lastReconcileAt)) / 1000;
  const ok = age <= maxAgeSeconds && s.lastResult !== 'error' && s.lastResult !== null;
  const when = s.lastReconcileAt === null ? 'never verified' : `last verified ${Math.round(age)}s ago`;
  return { ok, text: `imds-guard: agent pid ${s.pid} ${when}: ${s.lastResult ?? 'no result'}${s.lastError ? ` (${s.lastError})` : ''}` };
}
