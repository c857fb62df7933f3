import { type CgroupPath, type HostContainerCoverage, cgroupMatchArgs } from './cgroup.js';
import { type DesiredRule, REJECT_RESET, endpointMatch, ruleFor } from './desired.js';
import type { DockerContainer } from './docker-facts.js';
import type { Endpoint } from './endpoint.js';
import type { Family } from './family.js';
import { CHECK, type Finding } from './findings.js';
import { OUTPUT_CHAIN } from './names.js';

/**
 * What the host-network side of a pass observed. Host-network containers share the
 * host's stack, so their packets go through OUTPUT, not PREROUTING; only their cgroup
 * tells them from the host's own processes (`-m cgroup --path`, cgroup v2).
 */
export interface HostNetObservation {
  /** Each running host-network container and how it is covered (hostContainerCoverage). */
  readonly containers: readonly HostContainerCoverage[];
  /** Docker's container parent and its directory's inode, when it has one that exists. */
  readonly parent: { readonly path: CgroupPath; readonly inode: number } | null;
  /** Inodes of the own-rule and exempt containers' cgroups, by container id. */
  readonly inodes: ReadonlyMap<string, number>;
  /** Why host-network containers cannot be covered at all on this host (no cgroup v2, no match), or null. */
  readonly unavailable: string | null;
}

/** Running containers that share the host's network: `--network host`, and `--network container:X` where X does. */
export function hostNetworkContainers(containers: readonly DockerContainer[]): { container: DockerContainer; joinsHostVia: string | null }[] {
  const host = new Map(containers.filter((c) => c.networkMode === 'host').map((c) => [c.id, c]));
  return containers.flatMap((c): { container: DockerContainer; joinsHostVia: string | null }[] => {
    if (c.networkMode === 'host') return [{ container: c, joinsHostVia: null }];
    const m = /^container:(.+)$/.exec(c.networkMode);
    const via = m === null ? undefined : [...host.values()].find((h) => h.id === m[1] || h.id.startsWith(m[1]!) || h.name === m[1]);
    return via === undefined ? [] : [{ container: c, joinsHostVia: via.name }];
  });
}

/**
 * The filter OUTPUT chain's content for one family: exempt containers' cgroups return
 * first, then per endpoint the parent rule (every container under Docker's parent, from
 * its first packet, whatever starts later) and a rule per container outside it. Each
 * cgroup rule's comment records the inode of the cgroup it was resolved against, so a
 * cgroup removed and made again (the rule then matches nothing) is seen in what
 * iptables-save returns, with no state file. REJECT in filter also cuts connections
 * opened before the rule.
 */
export function hostNetRules(family: Family, endpoints: readonly Endpoint[], obs: HostNetObservation): DesiredRule[] {
  const eps = endpoints.filter((e) => e.family === family);
  if (eps.length === 0 || obs.unavailable !== null) return [];
  const rules: DesiredRule[] = [];
  const inodeOf = (c: HostContainerCoverage): number | undefined => obs.inodes.get(c.id);
  for (const c of obs.containers.filter((x) => x.coverage === 'exempt' && x.cgroup !== null && inodeOf(x) !== undefined)) {
    rules.push(ruleFor(family, OUTPUT_CHAIN, 'allow', cgroupMatchArgs(c.cgroup!), ['-j', 'RETURN'], { cgroup: c.cgroup! }, `cgino=${inodeOf(c)!}`));
  }
  const blockFor = (path: CgroupPath, inode: number): DesiredRule[] =>
    eps.map((e) => ruleFor(family, OUTPUT_CHAIN, 'block', [...endpointMatch(family, e), ...cgroupMatchArgs(path)], REJECT_RESET, { endpoint: e, cgroup: path }, `cgino=${inode}`));
  if (obs.parent !== null) rules.push(...blockFor(obs.parent.path, obs.parent.inode));
  for (const c of obs.containers.filter((x) => x.coverage === 'own-rule' && x.cgroup !== null && inodeOf(x) !== undefined)) rules.push(...blockFor(c.cgroup!, inodeOf(c)!));
  return rules;
}

/** One finding per host-network container: how it is covered, and why. */
export function hostContainerFindings(obs: HostNetObservation, notCoverable: 'warn' | 'fail'): Finding[] {
  return obs.containers.map((c): Finding => {
    const at = { container: c.name, evidence: [`cgroup ${c.cgroup ?? 'unknown'}`] };
    if (c.coverage === 'not-coverable' || (c.coverage === 'own-rule' && !obs.inodes.has(c.id))) {
      return { ...at, id: CHECK.hostContainer, kind: 'host-container-exposed', status: notCoverable, severity: 'high', message: `host-network container ${c.name} is exposed: ${obs.unavailable ?? c.reason}`, remediation: 'run it on a bridge network, or on a host with cgroup v2 and the xt_cgroup match' };
    }
    // hostNetRules writes an exemption's return rule only for a cgroup whose inode was read;
    // without one the container stays blocked under the parent, which the audit must say.
    if (c.coverage === 'exempt' && (c.cgroup === null || !obs.inodes.has(c.id))) {
      return { ...at, id: CHECK.hostContainer, kind: 'host-container', status: 'warn', severity: 'medium', message: `host-network container ${c.name} is exempt, but its cgroup could not be resolved, so it has no return rule and stays blocked wherever a cgroup rule covers it (${c.reason})` };
    }
    const how = c.coverage === 'parent-rule' ? 'covered by the parent rule' : c.coverage === 'own-rule' ? 'covered by a rule of its own' : 'exempt, keeps access';
    return { ...at, id: CHECK.hostContainer, kind: 'host-container', status: 'info', severity: 'info', message: `host-network container ${c.name}: ${how} (${c.reason})` };
  });
}

/**
 * The OUTPUT chain the boot script restores: the parent rule alone, with no inode in its
 * comment (cgroups are made anew at every boot; the agent's first pass records the new
 * inode). Per-container rules and exemptions name cgroups that do not exist at boot.
 */
export function bootHostNetRules(family: Family, endpoints: readonly Endpoint[], parent: CgroupPath | null): DesiredRule[] {
  if (parent === null) return [];
  return endpoints
    .filter((e) => e.family === family)
    .map((e) => ruleFor(family, OUTPUT_CHAIN, 'block', [...endpointMatch(family, e), ...cgroupMatchArgs(parent)], REJECT_RESET, { endpoint: e, cgroup: parent }));
}
