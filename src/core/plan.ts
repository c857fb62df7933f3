import type { BackendChoice } from './backend-choice.js';
import { type BootScriptFile, type BootScriptState, inspectBootScript, renderBootScript } from './boot-script.js';
import { type ChainDiff, chainConverged, compareChain, endpointsOf } from './chain-compare.js';
import { chainFindings, deleteCommand, savedLine, seedDuplicateFindings } from './chain-findings.js';
import { type NetworkView, networkFindings } from './coverage.js';
import type { DesiredFamily } from './desired.js';
import type { DockerFacts } from './docker-facts.js';
import { type Backend, type Family, FAMILIES, otherBackend } from './family.js';
import { CHECK, type Finding } from './findings.js';
import { BOOT_SCRIPT_NAME, NAT_CHAIN, isOwnedChain } from './names.js';
import { type NativeNftRead, nftBypassFindings } from './nft-bypass.js';
import { canIntercept, matchesEndpoint } from './reach.js';
import { renderRemoval, renderTableRestore } from './restore-payload.js';
import { ruleTarget } from './rule.js';
import { type SavedTable, type TableName, chainRules, emptyTable, hasChain } from './saved-table.js';

/** One family's tables as one backend holds them, or why they could not be read. */
export type TableRead = { readonly ok: true; readonly tables: ReadonlyMap<TableName, SavedTable> } | { readonly ok: false; readonly why: string };

export interface FamilyObservation {
  /** Whether the host has this family at all (an IPv6-less kernel has no ip6tables nat table to read). */
  readonly present: boolean;
  /** The tables of the backend Docker uses. */
  readonly ours: TableRead;
  /** The other backend's tables; null when they are not loaded (nothing can be there). */
  readonly other: ReadonlyMap<TableName, SavedTable> | null;
}

/** Everything one pass read from the host. */
export interface Observation {
  readonly backend: BackendChoice;
  readonly families: Readonly<Record<Family, FamilyObservation>>;
  /** What Docker said; null when it was not asked (switched off) or could not be reached. */
  readonly docker: DockerFacts | null;
  readonly dockerReachable: boolean | null;
  readonly bootScript: { readonly dirExists: boolean; readonly file: BootScriptFile | null };
  /** Whether OpenRC's `local` service is in the default runlevel; null on a host without OpenRC. */
  readonly localServiceEnabled: boolean | null;
  /** The native nftables tables (not iptables-nft's); absent when this read did not look (the agent's cheap read). */
  readonly nft?: NativeNftRead;
}

/** What the configuration decides for a pass beyond the rules themselves. */
export interface PlanPolicy {
  readonly allow: readonly string[];
  readonly notCoverable: 'warn' | 'fail';
  readonly bootScript: 'auto' | 'always' | 'never';
  readonly bootScriptDir: string;
  readonly openrcRoot: string;
  readonly enableLocalService: boolean;
}

/** One `iptables-restore --noflush` transaction: one table of one family in one backend. */
export interface Transaction {
  readonly family: Family;
  readonly backend: Backend;
  readonly table: TableName;
  readonly payload: string;
  /** Adds or repairs protection (so connections opened before it must be cut), rather than only removing ours. */
  readonly protects: boolean;
}

export interface Plan {
  readonly findings: readonly Finding[];
  readonly transactions: readonly Transaction[];
  readonly bootScript: { readonly path: string; readonly expected: string; readonly state: BootScriptState; readonly write: boolean } | null;
  readonly enableLocalService: boolean;
  readonly networks: readonly NetworkView[];
  /** The desired state per family the plan was made for. */
  readonly desired: readonly DesiredFamily[];
  /** What the boot script restores. */
  readonly bootDesired: { readonly families: readonly DesiredFamily[]; readonly cgroupParent: string | null };
  /** Docker's rules left above its `-j DOCKER-USER` for Docker to finish with (chain-compare), as saved lines. */
  readonly awaitingDocker: readonly string[];
}

/** What the boot script restores: the desired state as it can be at boot, and the container parent cgroup to create first. */
export interface BootDesired {
  readonly families: Readonly<Record<Family, DesiredFamily>>;
  readonly cgroupParent: string | null;
}

/**
 * Desired state (computed once by the caller) compared with what was observed.
 * `waitForDocker` says which of Docker's bridge rules, seen above its `-j DOCKER-USER`,
 * are fresh enough to leave for Docker to finish its network create (the agent); by
 * default none are, and the FORWARD jump is moved above them.
 */
export function planReconcile(desired: Readonly<Record<Family, DesiredFamily>>, obs: Observation, policy: PlanPolicy, boot: BootDesired = { families: desired, cgroupParent: null }, waitForDocker: (line: string) => boolean = () => false): Plan {
  const backend = obs.backend.backend;
  const findings: Finding[] = [{ id: CHECK.backend, kind: 'backend', status: 'info', severity: 'info', backend, message: `iptables backend ${backend}: ${obs.backend.reason}`, evidence: [] }];
  const transactions: Transaction[] = [];
  const written: DesiredFamily[] = [];
  const awaitingDocker: string[] = [];
  for (const family of FAMILIES) {
    const f = planFamily(desired[family], obs.families[family], backend, policy.allow, waitForDocker);
    findings.push(...f.findings);
    transactions.push(...f.transactions);
    awaitingDocker.push(...f.awaitingDocker);
    if (f.holds) written.push(desired[family]);
  }
  const natEndpoints = FAMILIES.filter((f) => obs.families[f].present).flatMap((f) => desired[f].chains.filter((c) => c.chain === NAT_CHAIN).flatMap(endpointsOf));
  findings.push(...nftBypassFindings(natEndpoints, obs.nft, backend));
  const networks = obs.docker === null ? { views: [], findings: [] } : networkFindings(obs.docker.networks, policy.allow, policy.notCoverable);
  findings.push(...networks.findings);
  if (obs.dockerReachable === false) {
    findings.push({ id: CHECK.docker, kind: 'docker', status: 'warn', severity: 'low', message: 'Docker could not be asked: its networks are not listed (the protection does not depend on them)', evidence: [] });
  }
  const atBoot = { families: written.map((f) => boot.families[f.family]), cgroupParent: boot.cgroupParent };
  const script = planBootScript(policy, obs, backend, atBoot, findings);
  return { findings, transactions, bootScript: script.script, enableLocalService: script.enableLocal, networks: networks.views, desired: written, bootDesired: atBoot, awaitingDocker };
}

interface FamilyPlan {
  readonly findings: readonly Finding[];
  readonly transactions: readonly Transaction[];
  /** The family's tables were read and hold (or will hold) our chains. */
  readonly holds: boolean;
  readonly awaitingDocker: readonly string[];
}

const WRITTEN_TABLES: readonly ('nat' | 'filter')[] = ['nat', 'filter'];

function planFamily(want: DesiredFamily, seen: FamilyObservation, backend: Backend, allow: readonly string[], waitForDocker: (line: string) => boolean): FamilyPlan {
  const { family } = want;
  const findings: Finding[] = [];
  const transactions: Transaction[] = [];
  const awaitingDocker: string[] = [];
  if (!seen.present) {
    if (want.chains.length > 0) findings.push({ id: CHECK.family, kind: 'family-unavailable', status: 'info', severity: 'info', family, backend, message: `this host has no ${family}: its endpoints cannot be reached and are skipped`, evidence: [] });
    return { findings, transactions, holds: false, awaitingDocker };
  }
  if (!seen.ours.ok) {
    // Fail closed: a table we could not read was not checked, so it is not protected.
    if (want.chains.length > 0) findings.push({ id: CHECK.family, kind: 'table-unreadable', status: 'fail', severity: 'critical', family, backend, message: `the ${family} tables of the ${backend} backend could not be read: nothing about ${family} was checked`, evidence: [seen.ours.why], remediation: 'make iptables work for this family and backend (or set backend), then imds-guard apply' });
  } else {
    const tables = seen.ours.tables;
    for (const table of WRITTEN_TABLES) {
      const saved = tables.get(table) ?? emptyTable(table);
      const chains = want.chains.filter((c) => c.table === table);
      const diffs: ChainDiff[] = chains.map((c) => compareChain(c, saved, allow, waitForDocker));
      for (const d of diffs) {
        awaitingDocker.push(...d.awaitingDocker.map(savedLine));
        findings.push(...chainFindings(d, { family, backend }, saved));
        findings.push(...seedDuplicateFindings(d, { family, backend }, saved));
      }
      const payload = want.chains.length === 0 ? renderRemoval(saved) : diffs.every(chainConverged) && !holdsUnwanted(saved, chains) ? null : renderTableRestore(table, diffs, saved);
      if (payload !== null) transactions.push({ family, backend, table, payload, protects: want.chains.length > 0 });
    }
    findings.push(...bypassFindings(want, tables, family, backend));
  }
  if (seen.other !== null) {
    const ob = otherBackend(backend);
    for (const [table, saved] of seen.other) {
      const payload = table === 'raw' ? null : renderRemoval(saved);
      if (payload !== null) {
        findings.push({ id: CHECK.otherBackend, kind: 'other-backend', status: 'fail', severity: 'medium', family, backend: ob, table, message: `imds-guard rules are left in the ${ob} backend's ${table} table, which Docker does not use`, evidence: ownedJumps(saved).map(savedLine), remediation: 'imds-guard apply (removes them)' });
        transactions.push({ family, backend: ob, table, payload, protects: false });
      }
    }
    findings.push(...otherBackendUndermining(want, seen.other, family, ob, allow));
    findings.push(...bypassFindings(want, seen.other, family, ob));
  }
  return { findings, transactions, holds: seen.ours.ok && want.chains.length > 0, awaitingDocker };
}

/** An owned chain the desired state no longer has (host-network protection switched off). */
function holdsUnwanted(saved: SavedTable, chains: readonly { chain: string }[]): boolean {
  const wanted = new Set(chains.map((c) => c.chain));
  return saved.chains.some((c) => isOwnedChain(c) && !wanted.has(c));
}

function ownedJumps(saved: SavedTable): ReturnType<typeof chainRules> {
  return saved.chains.filter((c) => !isOwnedChain(c)).flatMap((c) => chainRules(saved, c).filter((r) => isOwnedChain(ruleTarget(r) ?? '')));
}

/**
 * Rules of the other backend's nat PREROUTING that take endpoint traffic: both
 * backends' base chains sit at the same hook and priority, so which runs first is not
 * ours to decide, and a DNAT or ACCEPT there can win.
 */
function otherBackendUndermining(want: DesiredFamily, other: ReadonlyMap<TableName, SavedTable>, family: Family, backend: Backend, allow: readonly string[]): Finding[] {
  const nat = other.get('nat');
  const chain = want.chains.find((c) => c.chain === NAT_CHAIN);
  if (nat === undefined || chain === undefined) return [];
  const scope = { allowed: allow, chain: (n: string) => (hasChain(nat, n) && !isOwnedChain(n) ? chainRules(nat, n) : undefined) };
  return chainRules(nat, 'PREROUTING')
    .filter((r) => !isOwnedChain(ruleTarget(r) ?? '') && endpointsOf(chain).some((e) => canIntercept(r, e, scope)))
    .map((r) => ({ id: CHECK.otherBackendUndermining, kind: 'other-backend-undermining' as const, status: 'fail' as const, severity: 'critical' as const, family, backend, table: 'nat', chain: 'PREROUTING', message: `a rule in the ${backend} backend's nat PREROUTING takes metadata traffic at the same hook as ours, and may run first`, evidence: [savedLine(r)], remediation: `remove it if it is not wanted: ${deleteCommand(family, backend, 'nat', r)}` }));
}

/**
 * Untracked traffic never meets a nat rule: `-t raw ... -j CT --notrack` (or NOTRACK)
 * for an endpoint skips our catch-all. The filter backstop still refuses it; the
 * rule is reported all the same, since someone meant to get around NAT.
 */
function bypassFindings(want: DesiredFamily, tables: ReadonlyMap<TableName, SavedTable>, family: Family, backend: Backend): Finding[] {
  const raw = tables.get('raw');
  const chain = want.chains.find((c) => c.chain === NAT_CHAIN);
  if (raw === undefined || chain === undefined) return [];
  const untracks = (r: ReturnType<typeof chainRules>[number]): boolean => ruleTarget(r) === 'NOTRACK' || (ruleTarget(r) === 'CT' && r.options.some((o) => o.name === '--notrack'));
  return raw.chains
    .flatMap((c) => chainRules(raw, c))
    .filter((r) => untracks(r) && endpointsOf(chain).some((e) => matchesEndpoint(r, e, [])))
    .map((r) => ({ id: CHECK.bypass, kind: 'bypass-notrack' as const, status: 'fail' as const, severity: 'high' as const, family, backend, table: 'raw', chain: r.chain, message: `connection tracking is switched off for metadata traffic, so it skips the nat protection (the filter backstop still refuses it)`, evidence: [savedLine(r)], remediation: `remove it if it is not wanted: ${deleteCommand(family, backend, 'raw', r)}` }));
}

const BOOT_FINDING: Record<Exclude<BootScriptState, 'ok'>, { kind: Finding['kind']; severity: Finding['severity']; message: string }> = {
  missing: { kind: 'boot-script-missing', severity: 'high', message: 'the boot script is missing: protection is not restored at boot' },
  stale: { kind: 'boot-script-stale', severity: 'medium', message: 'the boot script is out of date: it would restore other rules than the current configuration' },
  edited: { kind: 'boot-script-edited', severity: 'high', message: 'the boot script was edited by hand' },
  'not-executable': { kind: 'boot-script-not-executable', severity: 'high', message: "the boot script is not executable: OpenRC's local service skips it" },
};

function planBootScript(policy: PlanPolicy, obs: Observation, backend: Backend, boot: Plan['bootDesired'], findings: Finding[]): { script: Plan['bootScript']; enableLocal: boolean } {
  const desired = boot.families;
  const path = `${policy.bootScriptDir}/${BOOT_SCRIPT_NAME}`;
  const wanted = policy.bootScript === 'always' || (policy.bootScript === 'auto' && obs.bootScript.dirExists);
  if (!wanted || desired.length === 0) {
    if (policy.bootScript === 'auto' && !obs.bootScript.dirExists) {
      findings.push({ id: CHECK.bootScript, kind: 'boot-script-ok', status: 'info', severity: 'info', message: `${policy.bootScriptDir} does not exist (not an OpenRC host): no boot script written`, evidence: [] });
    }
    return { script: null, enableLocal: false };
  }
  const expected = renderBootScript(backend, desired, boot.cgroupParent);
  const state = inspectBootScript(obs.bootScript.file, expected);
  if (state === 'ok') {
    findings.push({ id: CHECK.bootScript, kind: 'boot-script-ok', status: 'pass', severity: 'info', message: `${path} is current`, evidence: [] });
  } else {
    const f = BOOT_FINDING[state];
    const mode = obs.bootScript.file === null ? [] : [`mode ${obs.bootScript.file.mode.toString(8)}`];
    findings.push({ id: CHECK.bootScript, kind: f.kind, status: 'fail', severity: f.severity, message: `${f.message} (${path})`, evidence: mode, remediation: 'imds-guard apply' });
  }
  let enableLocal = false;
  if (obs.localServiceEnabled === false) {
    enableLocal = policy.enableLocalService;
    findings.push({ id: CHECK.localService, kind: 'local-service-disabled', status: policy.enableLocalService ? 'fail' : 'warn', severity: 'medium', message: `OpenRC's local service is not in the default runlevel, so ${path} will not run at boot`, evidence: [`${policy.openrcRoot}/default/local is missing`], remediation: 'rc-update add local default (or imds-guard apply --enable-local-service)' });
  } else if (obs.localServiceEnabled === true) {
    findings.push({ id: CHECK.localService, kind: 'local-service-ok', status: 'pass', severity: 'info', message: "OpenRC's local service is enabled", evidence: [] });
  }
  return { script: { path, expected, state, write: state !== 'ok' }, enableLocal };
}

export function isConverged(plan: Plan): boolean {
  return plan.transactions.length === 0 && !(plan.bootScript?.write ?? false) && !plan.enableLocalService;
}

