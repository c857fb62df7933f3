import type { Config } from '../core/config.js';
import type { Family } from '../core/family.js';
import type { Finding } from '../core/findings.js';
import { BOOT_SCRIPT_NAME } from '../core/names.js';
import { type Plan, isConverged, planReconcile } from '../core/plan.js';
import { CommandError } from '../errors.js';
import { observe } from './observe.js';
import type { Ports } from './ports.js';

export interface ReconcileResult {
  readonly plan: Plan;
  /** Findings as observed at the start of the pass (what was wrong, before any repair). */
  readonly findings: readonly Finding[];
  readonly backend: string;
  /** iptables-restore transactions run. */
  readonly restores: number;
  /** ipset restores run (set members changed without touching the nat table). */
  readonly setWrites: number;
  readonly repaired: boolean;
  readonly converged: boolean;
  /** The set form was refused and this pass covered custom-named bridges with rules of their own. */
  readonly setRefused: boolean;
}

// A restore that deletes a jump fails when someone changed the table between our save
// and our restore. That is a reason to look again, not an error.
const ATTEMPTS = 3;

/** One level-triggered pass: observe, compute, diff, apply (in enforce mode), report. */
export async function reconcile(config: Config, ports: Ports): Promise<ReconcileResult> {
  let cfg = config;
  for (let attempt = 1; ; attempt++) {
    const obs = await observe(cfg, ports);
    const plan = planReconcile(cfg, obs);
    const base = { plan, findings: plan.findings, backend: obs.backend.backend, converged: isConverged(plan), setRefused: cfg !== config };
    if (cfg.mode === 'report' || base.converged) return { ...base, restores: 0, setWrites: 0, repaired: false };
    try {
      const { restores, setWrites } = await apply(cfg, plan, ports);
      return { ...base, restores, setWrites, repaired: true };
    } catch (e) {
      if (!(e instanceof CommandError && e.code === 'restore-failed') || attempt >= ATTEMPTS) throw e;
      // The set is an optimisation and must never cost protection: a kernel with ipset
      // but without iptables' set match refuses the set rule every time, so the last
      // attempt gives each custom-named bridge rules of its own.
      if (attempt === ATTEMPTS - 1 && cfg.ipset !== 'never' && usesSets(plan) && aboutSets(e)) {
        ports.log.warn({ attempt, err: e.message }, 'the set form was refused twice; covering custom-named bridges with rules of their own in this pass');
        cfg = { ...cfg, ipset: 'never' };
      } else {
        ports.log.warn({ attempt, err: e.message }, 'the nat table changed under the transaction; observing again');
      }
    }
  }
}

/** ipset itself failed, or iptables named the set match or a set in its complaint (not a table that changed under it). */
function aboutSets(e: CommandError): boolean {
  return e.command === 'ipset' || /\bset\b/i.test(`${e.message}\n${e.stderr}`);
}

function usesSets(plan: Plan): boolean {
  return plan.transactions.some((t) => t.tool === 'ipset' || t.payload.includes('--match-set'));
}

async function apply(config: Config, plan: Plan, ports: Ports): Promise<{ restores: number; setWrites: number }> {
  const protectedFamilies = new Set<Family>();
  for (const t of plan.transactions) {
    if (t.tool === 'iptables') {
      await ports.iptables.restore(t.family, t.backend, t.payload);
      ports.log.info({ family: t.family, backend: t.backend, lines: t.payload.split('\n').length - 3 }, 'applied nat transaction');
      if (t.protects) protectedFamilies.add(t.family);
    } else {
      await ports.ipset.restore(t.payload);
      ports.log.info({ families: t.families, lines: t.payload.split('\n').length - 1 }, 'applied ipset update');
      if (t.protects) for (const f of t.families) protectedFamilies.add(f);
    }
  }
  if (config.conntrack) await flushConnections(config, ports, protectedFamilies);
  if (plan.bootScript?.write) {
    const path = `${config.bootScriptDir}/${BOOT_SCRIPT_NAME}`;
    await ports.files.writeAtomic(path, plan.bootScript.expected, 0o755);
    ports.log.info({ path, was: plan.bootScript.state }, 'wrote boot script');
  }
  if (plan.enableLocalService) {
    await ports.files.ensureSymlink('/etc/init.d/local', `${config.openrcRoot}/default/local`);
    ports.log.info({ runlevel: 'default' }, "enabled OpenRC's local service");
  }
  const restores = plan.transactions.filter((t) => t.tool === 'iptables').length;
  return { restores, setWrites: plan.transactions.length - restores };
}

/** NAT only sees new connections: cut the ones to the endpoints opened before protection was in place. */
async function flushConnections(config: Config, ports: Ports, families: ReadonlySet<Family>): Promise<void> {
  for (const e of config.endpoints.filter((x) => families.has(x.family))) {
    const r = await ports.conntrack.flush(e);
    if ('deleted' in r) {
      if (r.deleted > 0) ports.log.info({ endpoint: e.address, port: e.port, deleted: r.deleted }, 'cut tracked connections opened before protection');
    } else {
      ports.log.warn({ endpoint: e.address, why: r.unavailable }, 'could not cut tracked connections to the endpoint: connections opened before protection may stay open');
    }
  }
}

