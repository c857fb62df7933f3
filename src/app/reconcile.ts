import type { Config } from '../core/config.js';
import { type DesiredFamily, type GuardSpec, desiredFamily } from '../core/desired.js';
import { type Backend, type Family, FAMILIES } from '../core/family.js';
import { type CheapRead, savedFamiliesOf, wholeTablesOf } from '../core/deciding-reads.js';
import { CHECK, type Finding, isFailure } from '../core/findings.js';
import { formatEndpoint } from '../core/endpoint.js';
import { guardSpecOf, planPolicyOf } from '../core/pass-input.js';
import { type Observation, type Plan, type PlanPolicy, isConverged, planReconcile } from '../core/plan.js';
import { CommandError, describeError } from '../errors.js';
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
  /** Families whose tracked connections could not be cut yet: the next pass tries again. */
  readonly cutPending: readonly Family[];
  /** The pass found only a repair `hold` said to put off (a fight's next identical repair): nothing was written. */
  readonly held?: boolean;
}

export interface ReconcileOptions {
  /**
   * Read only the deciding chains of this backend first (the agent, when its last full
   * read was converged); a pass that finds anything to do or report reads everything.
   */
  readonly cheap?: CheapRead & {
    /** Also read the native nftables tables (a one-shot apply; the agent reads them in its full reads). */
    readonly native?: boolean;
  };
  /** Families whose connections to the endpoints must still be cut (a cut that failed in an earlier pass). */
  readonly cutPending?: readonly Family[];
  /** Which of Docker's bridge rules above its `-j DOCKER-USER` to leave for Docker to finish with (core/plan); default none. */
  readonly waitForDocker?: (line: string) => boolean;
  /**
   * Puts off a repair whose findings it says yes to (the agent, during a repair backoff:
   * the same repair again too soon). Any other repair is applied at once.
   */
  readonly hold?: (findings: readonly Finding[]) => boolean;
}

// A restore that deletes a jump fails when someone changed the table between our save
// and our restore. That is a reason to look again, not an error.
const ATTEMPTS = 3;

/** One level-triggered pass: observe, compute the desired state once, diff, apply (in enforce mode), report. */
export async function reconcile(config: Config, ports: Ports, opts: ReconcileOptions = {}): Promise<ReconcileResult> {
  const spec = guardSpecOf(config);
  const policy = planPolicyOf(config);
  if (opts.cheap !== undefined) {
    const cheap = await passOver(await observeDeciding(config, ports, opts.cheap), config, ports, spec, policy, opts.waitForDocker);
    // Only "nothing to do, nothing wrong" is decided from the deciding chains alone.
    if (cheap.converged && !cheap.findings.some(isFailure)) return { ...cheap, restores: 0, repaired: false, reads: 'deciding', cutPending: await cutConnections(config, ports, new Set(opts.cutPending)) };
  }
  for (let attempt = 1; ; attempt++) {
    const base = await passOver(await observe(config, ports), config, ports, spec, policy, opts.waitForDocker);
    if (config.mode === 'report') return { ...base, restores: 0, repaired: false, reads: 'full', cutPending: [...(opts.cutPending ?? [])] };
    if (base.converged) return { ...base, restores: 0, repaired: false, reads: 'full', cutPending: await cutConnections(config, ports, new Set(opts.cutPending)) };
    if (opts.hold?.(base.findings) === true) return { ...base, restores: 0, repaired: false, reads: 'full', cutPending: [...(opts.cutPending ?? [])], held: true };
    try {
      const { restores, cutPending } = await apply(config, base.plan, ports, opts.cutPending ?? []);
      return { ...base, restores, repaired: true, reads: 'full', cutPending };
    } catch (e) {
      if (!(e instanceof CommandError && e.code === 'restore-failed') || attempt >= ATTEMPTS) throw e;
      ports.log.warn({ attempt, err: e.message }, 'a table changed under the transaction; observing again');
    }
  }
}

/**
 * What the next pass of an agent may read cheaply after this full read: the deciding
 * chains of the backend it chose, with the tables it found small listed whole and the
 * families it found small saved whole; null when
 * it was not converged or found a failure (then the next pass reads everything again).
 */
export function cheapReadAfter(full: ReconcileResult): CheapRead | null {
  if (!full.converged || full.findings.some(isFailure)) return null;
  return { backend: full.observation.backend.backend, whole: wholeTablesOf(full.observation), saved: savedFamiliesOf(full.observation) };
}

/**
 * The backend a converged `apply` may check with the cheap read, or null: nft, only when
 * no legacy table is loaded at all (then nft is the backend, and the other backend holds
 * nothing: no leftovers to clean up, no rule that could win at the same hook). Legacy gains nothing: `iptables-legacy -S`
 * fetches the whole table from the kernel, as a save does.
 */
export async function cheapBackend(config: Config, ports: Ports): Promise<Backend | null> {
  if (config.backend === 'legacy') return null;
  // Also with backend nft set: a loaded legacy table may hold a rule that undermines ours.
  const [v4, v6] = await Promise.all([ports.iptables.legacyLoaded('ipv4'), ports.iptables.legacyLoaded('ipv6')]);
  return v4 || v6 ? null : 'nft';
}

type PassView = Omit<ReconcileResult, 'restores' | 'repaired' | 'reads' | 'cutPending'>;

/** Desired state computed once from config plus this observation, and the plan against it. */
async function passOver(obs: Observation, config: Config, ports: Ports, spec: GuardSpec, policy: PlanPolicy, waitForDocker?: (line: string) => boolean): Promise<PassView> {
  const hostNet = await observeHostNetwork(config, ports, obs);
  const desired = Object.fromEntries(FAMILIES.map((f) => [f, desiredFamily(spec, f, hostNet === null ? null : hostNetRules(f, spec.endpoints, hostNet))])) as Record<Family, DesiredFamily>;
  const parent = hostNet?.parent?.path ?? null;
  const boot = {
    families: Object.fromEntries(FAMILIES.map((f) => [f, desiredFamily(spec, f, hostNet === null ? null : bootHostNetRules(f, spec.endpoints, parent))])) as Record<Family, DesiredFamily>,
    cgroupParent: parent,
  };
  const plan = planReconcile(desired, obs, policy, boot, waitForDocker);
  const findings = [endpointFinding(config), ...plan.findings, ...(hostNet === null ? [] : hostContainerFindings(hostNet, config.notCoverable))];
  return { plan, observation: obs, hostNet, findings, backend: obs.backend.backend, converged: isConverged(plan) };
}

/** Which endpoints are hidden, and why those (a cloud preset, DMI, or the configuration). */
function endpointFinding(config: Config): Finding {
  const c = config.endpointChoice;
  const which = c.chosen === 'explicit' ? 'configured endpoints' : c.cloud === null ? 'the default endpoints' : `the ${c.cloud} preset`;
  return { id: CHECK.endpoints, kind: 'endpoints', status: 'info', severity: 'info', message: `hiding ${config.endpoints.map(formatEndpoint).join(', ')} (${which}: ${c.reason})`, evidence: [] };
}

async function apply(config: Config, plan: Plan, ports: Ports, pending: readonly Family[]): Promise<{ restores: number; cutPending: Family[] }> {
  const protectedFamilies = new Set<Family>(pending);
  let cutPending: Family[] = [];
  try {
    for (const t of plan.transactions) {
      await ports.iptables.restore(t.family, t.backend, t.payload);
      ports.log.info({ family: t.family, backend: t.backend, table: t.table, lines: t.payload.split('\n').length - 3 }, 'applied transaction');
      if (t.protects) protectedFamilies.add(t.family);
    }
  } finally {
    // Also when a later transaction failed: the families already protected get their old
    // connections cut now, and a cut that fails is kept pending for the next pass.
    cutPending = await cutConnections(config, ports, protectedFamilies);
  }
  if (plan.bootScript?.write) {
    await ports.files.writeAtomic(plan.bootScript.path, plan.bootScript.expected, 0o755);
    ports.log.info({ path: plan.bootScript.path, was: plan.bootScript.state }, 'wrote boot script');
  }
  if (plan.enableLocalService) {
    await ports.files.ensureSymlink('/etc/init.d/local', `${config.openrcRoot}/default/local`);
    ports.log.info({ runlevel: 'default' }, "enabled OpenRC's local service");
  }
  return { restores: plan.transactions.length, cutPending };
}

/**
 * NAT only sees new connections: cut the ones to the endpoints that containers opened
 * before protection was in place (the host's own are left alone). Returns the families
 * whose cut could not be done, for the next pass to try again.
 */
async function cutConnections(config: Config, ports: Ports, families: ReadonlySet<Family>): Promise<Family[]> {
  if (!config.conntrack || families.size === 0) return [];
  const failed = new Set<Family>();
  for (const e of config.endpoints.filter((x) => families.has(x.family))) {
    const r = await ports.conntrack.flush(e).catch((err: unknown) => ({ unavailable: describeError(err) }));
    if ('deleted' in r) {
      if (r.deleted > 0) ports.log.info({ event: 'connections-cut', endpoint: formatEndpoint(e), deleted: r.deleted }, 'cut tracked connections containers opened before protection');
    } else {
      failed.add(e.family);
      ports.log.warn({ event: 'connections-not-cut', endpoint: formatEndpoint(e), why: r.unavailable }, 'could not cut tracked connections to the endpoint (the filter rules still refuse their packets); trying again next pass');
    }
  }
  return [...failed];
}
