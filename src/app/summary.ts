import { renderBootScript } from '../core/boot-script.js';
import type { Config } from '../core/config.js';
import { isDrift, needsOperator } from '../core/findings.js';
import type { Ports } from './ports.js';
import { type ReconcileResult, reconcile } from './reconcile.js';

/**
 * What `apply` tells the operator, rendered from the pass's result: what was wrong (and
 * repaired), what no pass can repair (a table it could not read, a foreign rule it may not
 * touch), and what is in place. It never says "protected" while a failure is left open.
 */
export function summarizeApply(config: Config, r: ReconcileResult, json: boolean): { text: string } & Record<string, unknown> {
  const open = r.findings.filter(needsOperator);
  const fails = r.findings.filter((f) => isDrift(f) && !needsOperator(f));
  const warns = r.findings.filter((f) => f.status === 'warn');
  const rules = r.plan.desired.reduce((n, f) => n + f.chains.reduce((m, c) => m + c.rules.length, 0), 0);
  const verb = config.mode === 'enforce' ? 'repaired' : 'would repair';
  const lines = [`imds-guard: backend ${r.backend}; ${rules} rule(s) hide ${config.endpoints.length} endpoint(s) from every container${config.allow.length > 0 ? ` (allowed: ${config.allow.join(' ')})` : ''}`];
  if (r.converged && open.length === 0) lines.push('imds-guard: already protected; nothing written');
  for (const f of fails) lines.push(`${verb}: [${f.kind}] ${f.family ? `${f.family} ` : ''}${f.message}`);
  for (const f of open) lines.push(`needs the operator: [${f.kind}] ${f.family ? `${f.family} ` : ''}${f.message}${f.remediation ? ` — ${f.remediation}` : ''}`);
  for (const f of warns) lines.push(`warning: [${f.kind}] ${f.message}${f.remediation ? ` — ${f.remediation}` : ''}`);
  if (config.mode === 'enforce' && open.length > 0) lines.push(`imds-guard: NOT PROTECTED (${r.restores} transaction(s); ${open.length} failure(s) no pass can repair)`);
  else if (config.mode === 'enforce' && !r.converged) lines.push(`imds-guard: protected (${r.restores} transaction(s))`);
  if (config.mode === 'report' && fails.length + open.length > 0) lines.push('imds-guard: NOT PROTECTED (report mode: nothing changed)');
  const text = lines.join('\n');
  if (!json) return { text };
  return { text, mode: config.mode, backend: r.backend, converged: r.converged, restores: r.restores, endpoints: config.endpoints.length, allow: config.allow, findings: r.findings };
}

/** The boot script for this host, as `apply` would write it (a report-mode pass: nothing is changed). */
export async function bootScriptFor(config: Config, ports: Ports): Promise<string> {
  const r = await reconcile({ ...config, mode: 'report' }, ports);
  return r.plan.bootScript?.expected ?? renderBootScript(r.observation.backend.backend, r.plan.bootDesired.families, r.plan.bootDesired.cgroupParent);
}
