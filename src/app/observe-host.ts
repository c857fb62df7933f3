import { type CgroupPath, type HostNetContainer, cgroupRuleReadBack, containerCgroupCandidates, hostContainerCoverage, namesContainer, pickContainerCgroup, toCgroupPath } from '../core/cgroup.js';
import type { Config } from '../core/config.js';
import { type HostNetObservation, hostNetworkContainers } from '../core/host-network.js';
import type { Observation } from '../core/plan.js';
import { describeError } from '../errors.js';
import type { Ports } from './ports.js';

// Docker's parent with the cgroupfs driver (and the default of dockerd's --cgroup-parent).
const CGROUPFS_PARENT = '/docker';

/**
 * Reads what the host-network side decides: Docker's container parent cgroup (made to
 * exist before Docker's first container with the cgroupfs driver, in enforce mode, so the
 * parent rule covers every host-network container from its first packet), the running
 * host-network containers' cgroups, and the inodes every cgroup rule is resolved against.
 */
export async function observeHostNetwork(config: Config, ports: Ports, obs: Observation): Promise<HostNetObservation | null> {
  if (!config.hostNetwork) return null;
  const cg = ports.cgroups;
  const hierarchy = await cg.hierarchy();
  const root = hierarchy.root;
  // With no hierarchy, or one our rules cannot name (a private cgroup namespace), no cgroup
  // rule is wanted at all: one the kernel refuses would fail the filter transaction, and
  // with it the FORWARD backstop.
  const match = hierarchy.problem !== null ? { available: false, why: hierarchy.problem } : await cgroupMatch(ports, obs);
  const unavailable = hierarchy.problem ?? (match.available ? null : match.why);

  const docker = obs.docker;
  const driver = docker?.cgroupDriver ?? null;
  const given = config.cgroupParent === 'auto' ? (driver === 'systemd' ? null : CGROUPFS_PARENT) : config.cgroupParent;
  const parentPath: CgroupPath | null = given === null ? null : toCgroupPath(given);
  let parentInode = parentPath === null || root === null ? null : await cg.inode(parentPath);
  // cgroupfs makes the parent only with its first container, and a rule cannot name a
  // cgroup that does not exist: create it, so the rule is in place before that container.
  if (parentInode === null && parentPath !== null && root !== null && unavailable === null && config.mode === 'enforce' && driver !== 'systemd' && docker !== null) {
    try {
      if (await cg.ensureDir(parentPath)) parentInode = await cg.inode(parentPath);
    } catch (e) {
      ports.log.warn({ err: describeError(e), cgroup: parentPath }, 'could not create the container parent cgroup');
    }
  }

  const host = docker === null ? [] : hostNetworkContainers(docker.containers);
  const daemonParent = config.cgroupParent === 'auto' ? null : config.cgroupParent;
  const facts: HostNetContainer[] = await Promise.all(
    host.map(async ({ container, joinsHostVia }) => {
      const state = (await ports.docker?.containerState(container.id).catch(() => null)) ?? null;
      const fromPid = state !== null && state.pid > 0 ? await cg.cgroupOfPid(state.pid) : null;
      // Without the host's pid namespace (a Swarm task) the pid is not the container's here:
      // look for its cgroup where Docker's driver puts it, by its id.
      let found: CgroupPath | null = null;
      if (root !== null && !(fromPid?.ok === true && namesContainer(fromPid.path, container.id))) {
        for (const p of containerCgroupCandidates({ id: container.id, driver, containerParent: state?.cgroupParent ?? '', daemonParent })) {
          if ((await cg.inode(p)) !== null) {
            found = p;
            break;
          }
        }
      }
      return { id: container.id, name: container.name, labels: container.labels, joinsHostVia, cgroup: pickContainerCgroup(container.id, fromPid, found) };
    }),
  );
  const containers = hostContainerCoverage({
    containers: facts, parent: parentPath, parentExists: parentInode !== null, exemptNames: config.hostNetworkExempt,
    cgroupMatch: match.available, cgroupV2: root !== null, hierarchyProblem: hierarchy.problem,
  });
  const inodes = new Map<string, number>();
  for (const c of containers) {
    if ((c.coverage === 'own-rule' || c.coverage === 'exempt') && c.cgroup !== null) {
      const ino = await cg.inode(c.cgroup);
      if (ino !== null) inodes.set(c.id, ino);
    }
  }
  return { containers, parent: parentPath !== null && parentInode !== null ? { path: parentPath, inode: parentInode } : null, inodes, unavailable };
}

/**
 * Probed once per backend for the life of the ports (a start or a reload), like Felix's
 * feature detection; not at all when the tables already hold one of our cgroup rules,
 * which the kernel accepted and iptables printed back (a converged one-shot apply then
 * runs no probe).
 */
async function cgroupMatch(ports: Ports, obs: Observation): Promise<{ available: boolean; why: string }> {
  const proven = cgroupRuleReadBack(obs);
  if (proven !== null) return { available: true, why: `the kernel holds our ${proven} cgroup rules and iptables reads them back` };
  const backend = obs.backend.backend;
  // A probe that could not run (iptables missing, the lock held) says the match is not
  // known to work: host-network containers are then reported exposed, never passed.
  const probe = (f: 'ipv4' | 'ipv6') => ports.capabilities.cgroupMatch(f, backend).catch((e: unknown) => ({ available: false, why: `the cgroup match could not be probed: ${describeError(e)}` }));
  const [v4, v6] = await Promise.all([probe('ipv4'), probe('ipv6')]);
  return v4.available ? v4 : v6.available ? v6 : v4;
}
