import type { Config } from '../core/config.js';
import { type DesiredFamily, type GuardSpec, desiredFamily } from '../core/desired.js';
import { type Backend, type Family, FAMILIES } from '../core/family.js';
import { CHECK, type Finding, isFailure } from '../core/findings.js';
import { formatEndpoint } from '../core/endpoint.js';
import { guardSpecOf, planPolicyOf } from '../core/pass-input.js';
import { type Observation, type Plan, type PlanPolicy, isConverged, planReconcile } from '../core/plan.js';
import { CommandError } from '../errors.js';
import { observe, observeDeciding } from './observe.js';
import { observeHostNetwork } from './observe-host.js';
import { type HostNetObservation, bootHostNetRules, hostContainerFindings, hostNetRules } from '../core/host-network.js';
import type { Ports } from './ports.js';

export interface ReconcileResult {
  readonly plan: Plan;
  readonly observation: Observation;
  /** The host-network side, null when it is switched off. */
  readonly hostNet: HostNetObservation | null;
  /** Findings as observed at the start of the pass (what was wrong, before any repair). */
  readonly findings: readonly Finding[];
  readonly backend: string;
  /** iptables-restore transactions run. */
  readonly restores: number;
  readonly repaired: boolean;
  readonly converged: boolean;
  /** What the pass read: only the deciding chains (a converged agent's check), or every table. */
  readonly reads: 'deciding' | 'full';
}

export interface ReconcileOptions {
  /**
   * Read only the deciding chains of this backend first (the agent, when its last full
   * read was converged); a pass that finds anything to do or report reads everything.
   */
  readonly cheap?: { readonly backend: Backend };
}

// A restore that deletes a jump fails when someone changed the table between our save
// and our restore. That is a reason to look again, not an error.
const ATTEMPTS = 3;

/** One level-triggered pass: observe, compute the desired state once, diff, apply (in enforce mode), report. */
export async function reconcile(config: Config, ports: Ports, opts: ReconcileOptions = {}): Promise<ReconcileResult> {
  const spec = guardSpecOf(config);
  const policy = planPolicyOf(config);
  if (opts.cheap !== undefined) {
    const cheap = await passOver(await observeDeciding(config, ports, opts.cheap.backend), config, ports, spec, policy);
    // Only "nothing to do, nothing wrong" is decided from the deciding chains alone.
    if (cheap.converged && !cheap.findings.some(isFailure)) return { ...cheap, restores: 0, repaired: false, reads: 'deciding' };
  }
  for (let attempt = 1; ; attempt++) {
    const base = await passOver(await observe(config, ports), config, ports, spec, policy);
    if (config.mode === 'report' || base.converged) return { ...base, restores: 0, repaired: false, reads: 'full' };
    try {
      const restores = await apply(config, base.plan, ports);
      return { ...base, restores, repaired: true, reads: 'full' };
    } catch (e) {
      if (!(e instanceof CommandError && e.code === 'restore-failed') || attempt >= ATTEMPTS) throw e;
      ports.log.warn({ attempt, err: e.message }, 'a table changed under the transaction; observing again');
    }
  }
}

/**
 * The backend a converged `apply` may check with the cheap read, or null: nft when it is
 * configured, or when no legacy table is loaded at all (then nft is the backend, and the
 * other backend holds nothing to clean up). Legacy gains nothing: `iptables-legacy -S`
 * fetches the whole table from the kernel, as a save does.
 */
export async function cheapBackend(config: Config, ports: Ports): Promise<Backend | null> {
  if (config.backend === 'nft') return 'nft';
  if (config.backend === 'legacy') return null;
  const [v4, v6] = await Promise.all([ports.iptables.legacyLoaded('ipv4'), ports.iptables.legacyLoaded('ipv6')]);
  return v4 || v6 ? null : 'nft';
}

type PassView = Omit<ReconcileResult, 'restores' | 'repaired' | 'reads'>;

/** Desired state computed once from config plus this observation, and the plan against it. */
async function passOver(obs: Observation, config: Config, ports: Ports, spec: GuardSpec, policy: PlanPolicy): Promise<PassView> {
  const hostNet = await observeHostNetwork(config, ports, obs);
  const desired = Object.fromEntries(FAMILIES.map((f) => [f, desiredFamily(spec, f, hostNet === null ? null : hostNetRules(f, spec.endpoints, hostNet))])) as Record<Family, DesiredFamily>;
  const parent = hostNet?.parent?.path ?? null;
  const boot = {
    families: Object.fromEntries(FAMILIES.map((f) => [f, desiredFamily(spec, f, hostNet === null ? null : bootHostNetRules(f, spec.endpoints, parent))])) as Record<Family, DesiredFamily>,
    cgroupParent: parent,
  };
  const plan = planReconcile(desired, obs, policy, boot);
  const findings = [endpointFinding(config), ...plan.findings, ...(hostNet === null ? [] : hostContainerFindings(hostNet, config.notCoverable))];
  return { plan, observation: obs, hostNet, findings, backend: obs.backend.backend, converged: isConverged(plan) };
}

/** Which endpoints are hidden, and why those (a cloud preset, DMI, or the configuration). */
function endpointFinding(config: Config): Finding {
  const c = config.endpointChoice;
  const which = c.chosen === 'explicit' ? 'configured endpoints' : c.cloud === null ? 'the default endpoints' : `the ${c.cloud} preset`;
  return { id: CHECK.endpoints, kind: 'endpoints', status: 'info', severity: 'info', message: `hiding ${config.endpoints.map(formatEndpoint).join(', ')} (${which}: ${c.reason})`, evidence: [] };
}

async function apply(config: Config, plan: Plan, ports: Ports): Promise<number> {
  const protectedFamilies = new Set<Family>();
  for (const t of plan.transactions) {
    await ports.iptables.restore(t.family, t.backend, t.payload);
    ports.log.info({ family: t.family, backend: t.backend, table: t.table, lines: t.payload.split('\n').length - 3 }, 'applied transaction');
    if (t.protects) protectedFamilies.add(t.family);
  }
  if (config.conntrack) await flushConnections(config, ports, protectedFamilies);
  if (plan.bootScript?.write) {
    await ports.files.writeAtomic(plan.bootScript.path, plan.bootScript.expected, 0o755);
    ports.log.info({ path: plan.bootScript.path, was: plan.bootScript.state }, 'wrote boot script');
  }
  if (plan.enableLocalService) {
    await ports.files.ensureSymlink('/etc/init.d/local', `${config.openrcRoot}/default/local`);
    ports.log.info({ runlevel: 'default' }, "enabled OpenRC's local service");
  }
  return plan.transactions.length;
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
