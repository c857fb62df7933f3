import { type BackendChoice } from './backend-choice.js';
import { type BootScriptFile, type BootScriptState, inspectBootScript, renderBootScript } from './boot-script.js';
import type { Config } from './config.js';
import { coverage, coveredInterfaces, desiredFamily, type DesiredFamily } from './desired.js';
import { type Backend, type Family, FAMILIES, otherBackend } from './family.js';
import { CHECK, type Finding } from './findings.js';
import { type SavedSet, SET_NAME, compareSet, interfaceOfMember } from './ipset.js';
import { compareNat } from './nat-compare.js';
import { EMPTY_NAT, type NatTable, chainRules } from './nat-table.js';
import { CHAIN, interfacePatternMatches } from './names.js';
import { holdsOurs, renderRemoval, renderRestore } from './restore-payload.js';
import { joinArgs, optionValue } from './rule.js';

/** Everything one pass read from the host. */
export interface Observation {
  readonly backend: BackendChoice;
  /** Per family: our backend's nat table (null: unavailable) and the other backend's (null: not loaded). */
  readonly tables: Readonly<Record<Family, { readonly ours: NatTable | null; readonly other: NatTable | null }>>;
  /** Bridge interfaces Docker reports, or null when Docker could not be asked. */
  readonly dockerBridges: readonly string[] | null;
  readonly bootScript: { readonly dirExists: boolean; readonly file: BootScriptFile | null };
  /** Whether OpenRC's `local` service is in the default runlevel; null on a host without OpenRC. */
  readonly localServiceEnabled: boolean | null;
  /** Per family: our set as saved (null: not there), or unavailable when this host has no usable ipset. */
  readonly sets: Readonly<Record<Family, SetObservation>>;
}

/** Unavailable: this host has no usable ipset, or the set was not read because nothing of ours can be in one (see setWorthReading). */
export type SetObservation = { readonly available: false } | { readonly available: true; readonly set: SavedSet | null };

/**
 * Our set is read only where it can matter: a custom-named bridge for it to hold, or a
 * rule of ours naming it. Most hosts have neither, and their passes start no ipset
 * process at all; on 2 CPUs two more processes beside the saves cost a pass ~15 ms.
 * (A set left behind with no rule naming it is harmless; `remove` destroys it.)
 */
export function setWorthReading(config: Config, family: Family, ours: NatTable | null, dockerBridges: readonly string[] | null): boolean {
  if (ours !== null && chainRules(ours, CHAIN).some((r) => optionValue(r, '--match-set') === SET_NAME[family])) return true;
  if (config.ipset === 'never' || dockerBridges === null) return false;
  return coverage(config.interfaces, coveredInterfaces(config.interfaces, dockerBridges), true).members !== null;
}

/**
 * One write, applied in plan order: set members are added before the nat rules that
 * need them (iptables-restore refuses a rule naming a set that does not exist), and a
 * set is destroyed only after the rules naming it are gone.
 */
export type Transaction =
  | {
      readonly tool: 'iptables';
      readonly family: Family;
      readonly backend: Backend;
      readonly payload: string;
      /** Adds or repairs protection (so connections opened before it must be cut), rather than only removing ours. */
      readonly protects: boolean;
    }
  /** Set changes of both families go in one `ipset restore`: one process per pass, whatever the families. */
  | { readonly tool: 'ipset'; readonly families: readonly Family[]; readonly payload: string; readonly protects: boolean };

export interface Plan {
  readonly findings: readonly Finding[];
  readonly interfaces: readonly string[];
  readonly transactions: readonly Transaction[];
  readonly bootScript: { readonly expected: string; readonly state: BootScriptState; readonly write: boolean } | null;
  readonly enableLocalService: boolean;
}

/**
 * Desired state from config plus Docker's networks, compared with what was observed.
 * When Docker cannot be asked, interfaces already in our chain are kept: a Docker
 * restart must never take protection away (fail closed).
 */
export function planReconcile(config: Config, obs: Observation): Plan {
  const backend = obs.backend.backend;
  const discovered = obs.dockerBridges ?? keptInterfaces(config, obs);
  const interfaces = coveredInterfaces(config.interfaces, discovered);
  const findings: Finding[] = [{ id: CHECK.backend, kind: 'backend', status: 'info', severity: 'info', backend, message: `iptables backend ${backend}: ${obs.backend.reason}`, evidence: [] }];
  const families = FAMILIES.map((family) => planFamily(config, obs, family, interfaces));
  for (const f of families) findings.push(...f.findings);
  const desired = families.flatMap((f) => (f.desired === null ? [] : [f.desired]));
  const boot = planBootScript(config, obs, backend, desired, findings);
  const transactions = [
    ...setTransaction(families.flatMap((f) => f.setChanges), true),
    ...families.flatMap((f) => f.nat),
    ...setTransaction(families.flatMap((f) => f.setDestroys), false),
  ];
  return { findings, interfaces, transactions, bootScript: boot.script, enableLocalService: boot.enableLocal };
}

interface FamilyPlan {
  readonly findings: readonly Finding[];
  /** What this family should hold, or null when it holds nothing of ours (no endpoint, or no table). */
  readonly desired: DesiredFamily | null;
  readonly setChanges: readonly SetChange[];
  readonly nat: readonly Transaction[];
  readonly setDestroys: readonly SetChange[];
}

function planFamily(config: Config, obs: Observation, family: Family, interfaces: readonly string[]): FamilyPlan {
  const backend = obs.backend.backend;
  const { ours, other } = obs.tables[family];
  const setObs = obs.sets[family];
  const cover = coverage(config.interfaces, interfaces, config.ipset === 'auto' && setObs.available);
  const want = desiredFamily(config, family, cover.rules, cover.members);
  const findings: Finding[] = [];
  const setChanges: SetChange[] = [];
  const nat: Transaction[] = [];
  // A set nothing of ours needs any more goes once the rules naming it are gone; one in
  // a family whose table cannot be read is left alone.
  let setInUse = ours === null;
  if (ours === null) {
    if (want.rules.length > 0) findings.push({ id: CHECK.family, kind: 'family-unavailable', status: 'info', severity: 'info', family, backend, message: `the ${family} nat table is not available on this host; ${family} endpoints are skipped`, evidence: [] });
  } else if (want.rules.length === 0) {
    const payload = renderRemoval(ours);
    if (payload !== null) nat.push({ tool: 'iptables', family, backend, payload, protects: false });
  } else {
    let present: ReadonlySet<string> = new Set();
    if (want.set !== null && setObs.available) {
      const cmp = compareSet(want.set, setObs.set);
      findings.push(...cmp.findings);
      present = cmp.present;
      if (cmp.payload !== null) setChanges.push({ family, payload: cmp.payload });
      setInUse = true;
    }
    const cmp = compareNat({ desired: want, table: ours, family, backend, interfaces, setMembersPresent: present });
    findings.push(...cmp.findings);
    const payload = renderRestore(want, cmp);
    if (payload !== null) nat.push({ tool: 'iptables', family, backend, payload, protects: true });
  }
  const setDestroys = !setInUse && setObs.available && setObs.set !== null ? [{ family, payload: `destroy ${SET_NAME[family]}\n` }] : [];
  if (other !== null && holdsOurs(other)) {
    const ob = otherBackend(backend);
    findings.push({ id: CHECK.otherBackend, kind: 'other-backend', status: 'fail', severity: 'medium', family, backend: ob, message: `imds-guard rules are left in the ${ob} backend, which Docker does not use`, evidence: chainRules(other, 'PREROUTING').filter((r) => optionValue(r, '-j') === CHAIN).map((r) => `-A PREROUTING ${joinArgs(r.args)}`), remediation: 'imds-guard apply (removes them)' });
    nat.push({ tool: 'iptables', family, backend: ob, payload: renderRemoval(other)!, protects: false });
  }
  return { findings, desired: ours !== null && want.rules.length > 0 ? want : null, setChanges, nat, setDestroys };
}

interface SetChange {
  readonly family: Family;
  readonly payload: string;
}

function setTransaction(changes: readonly SetChange[], protects: boolean): Transaction[] {
  if (changes.length === 0) return [];
  return [{ tool: 'ipset', families: changes.map((c) => c.family), payload: changes.map((c) => c.payload).join(''), protects }];
}

function keptInterfaces(config: Config, obs: Observation): string[] {
  const inChain = FAMILIES.flatMap((f) => chainRules(obs.tables[f].ours ?? EMPTY_NAT, CHAIN))
    .map((r) => optionValue(r, '-i'))
    .filter((i): i is string => i !== undefined);
  const inSet = FAMILIES.flatMap((f) => {
    const o = obs.sets[f];
    return o.available && o.set !== null ? o.set.members.flatMap((m) => interfaceOfMember(f, m) ?? []) : [];
  });
  return [...inChain, ...inSet].filter((i) => !config.interfaces.some((p) => p === i || interfacePatternMatches(p, i)));
}

const BOOT_FINDING: Record<Exclude<BootScriptState, 'ok'>, { kind: Finding['kind']; severity: Finding['severity']; message: string }> = {
  missing: { kind: 'boot-script-missing', severity: 'high', message: 'the boot script is missing: protection is not restored at boot' },
  stale: { kind: 'boot-script-stale', severity: 'medium', message: 'the boot script is out of date: it would restore other rules than the current configuration' },
  edited: { kind: 'boot-script-edited', severity: 'high', message: 'the boot script was edited by hand' },
  'not-executable': { kind: 'boot-script-not-executable', severity: 'high', message: "the boot script is not executable: OpenRC's local service skips it" },
};

function planBootScript(config: Config, obs: Observation, backend: Backend, desired: readonly DesiredFamily[], findings: Finding[]): { script: Plan['bootScript']; enableLocal: boolean } {
  const path = `${config.bootScriptDir}/imds-guard.start`;
  const wanted = config.bootScript === 'always' || (config.bootScript === 'auto' && obs.bootScript.dirExists);
  if (!wanted || desired.length === 0) {
    if (config.bootScript === 'auto' && !obs.bootScript.dirExists) {
      findings.push({ id: CHECK.bootScript, kind: 'boot-script-ok', status: 'info', severity: 'info', message: `${config.bootScriptDir} does not exist (not an OpenRC host): no boot script written`, evidence: [] });
    }
    return { script: null, enableLocal: false };
  }
  const expected = renderBootScript(backend, desired);
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
    enableLocal = config.enableLocalService;
    findings.push({ id: CHECK.localService, kind: 'local-service-disabled', status: config.enableLocalService ? 'fail' : 'warn', severity: 'medium', message: `OpenRC's local service is not in the default runlevel, so ${path} will not run at boot`, evidence: [`${config.openrcRoot}/default/local is missing`], remediation: 'rc-update add local default (or imds-guard apply --enable-local-service)' });
  } else if (obs.localServiceEnabled === true) {
    findings.push({ id: CHECK.localService, kind: 'local-service-ok', status: 'pass', severity: 'info', message: "OpenRC's local service is enabled", evidence: [] });
  }
  return { script: { expected, state, write: state !== 'ok' }, enableLocal };
}

export function isConverged(plan: Plan): boolean {
  return plan.transactions.length === 0 && !(plan.bootScript?.write ?? false) && !plan.enableLocalService;
}
