import { renderBootScript } from '../core/boot-script.js';
import type { Config } from '../core/config.js';
import { desiredFamily } from '../core/desired.js';
import { FAMILIES } from '../core/family.js';
import { CHECK, isDrift } from '../core/findings.js';
import { planReconcile } from '../core/plan.js';
import { observe } from './observe.js';
import type { Ports } from './ports.js';
import type { ReconcileResult } from './reconcile.js';

/** What `apply` tells the operator: what was wrong (and repaired, in enforce mode) and what is now in place. */
export function summarizeApply(config: Config, r: ReconcileResult, json: boolean): { text: string } & Record<string, unknown> {
  const fails = r.findings.filter(isDrift);
  const warns = r.findings.filter((f) => f.status === 'warn');
  const rules = r.findings.filter((f) => f.id === CHECK.protection && f.interface !== undefined).length;
  const verb = config.mode === 'enforce' ? 'repaired' : 'would repair';
  const lines = [`imds-guard: backend ${r.backend}; ${rules} interface/endpoint rule(s) for ${r.plan.interfaces.join(' ')}`];
  if (r.converged) lines.push('imds-guard: already protected; nothing written');
  for (const f of fails) lines.push(`${verb}: [${f.kind}] ${f.family ? `${f.family} ` : ''}${f.message}`);
  for (const f of warns) lines.push(`warning: [${f.kind}] ${f.message}${f.remediation ? ` — ${f.remediation}` : ''}`);
  if (config.mode === 'enforce' && !r.converged) lines.push(`imds-guard: protected (${r.restores} nat transaction(s)${r.setWrites > 0 ? `, ${r.setWrites} ipset update(s)` : ''})`);
  if (config.mode === 'report' && fails.length > 0) lines.push('imds-guard: NOT PROTECTED (report mode: nothing changed)');
  const text = lines.join('\n');
  if (!json) return { text };
  return { text, mode: config.mode, backend: r.backend, converged: r.converged, restores: r.restores, setWrites: r.setWrites, interfaces: r.plan.interfaces, findings: r.findings };
}

/** The boot script for this host: its backend and Docker bridges, as `apply` would write it. */
export async function bootScriptFor(config: Config, ports: Ports): Promise<string> {
  const obs = await observe(config, ports);
  const plan = planReconcile(config, obs);
  if (plan.bootScript !== null) return plan.bootScript.expected;
  const families = FAMILIES.filter((f) => obs.tables[f].ours !== null).map((f) => desiredFamily(config, f, plan.interfaces));
  return renderBootScript(obs.backend.backend, families);
}
