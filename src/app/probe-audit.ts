import type { Config } from '../core/config.js';
import type { DockerFacts } from '../core/docker-facts.js';
import type { ProbeSample } from '../core/metrics-sample.js';
import { type ProbeContainerFact, type ProbeReport, buildProbeReport, chooseProbeTargets } from '../core/probe-report.js';
import { CommandError } from '../errors.js';
import { PROBE_DEFAULTS, runProbes } from './probe-run.js';
import type { Ports } from './ports.js';

/**
 * `audit --probe`: one container of every Docker network with a running container opens a
 * TCP connection to each endpoint from its own network namespace (host-network ones from
 * their cgroup), in parallel with a cap and within a total time bound. Nothing is sent and
 * nothing in any container changes.
 */
export async function probeFromContainers(config: Config, ports: Ports): Promise<ProbeReport> {
  if (ports.docker === null) throw new CommandError('audit --probe needs Docker (it probes from inside the containers): do not pass --no-docker', 'command-failed', 'docker');
  let facts: DockerFacts;
  try {
    facts = await ports.docker.facts();
  } catch (e) {
    throw new CommandError(`audit --probe: Docker could not be asked: ${(e as Error).message}`, 'command-failed', 'docker');
  }
  const containers: ProbeContainerFact[] = await Promise.all(
    facts.containers.map(async (c) => {
      const pid = await ports.docker!.containerState(c.id).then((s) => s.pid, () => 0);
      const read = pid > 0 ? await ports.cgroups.cgroupOfPid(pid).catch(() => null) : null;
      return { id: c.id, name: c.name, pid, running: pid > 0, networks: c.networks, cgroup: read?.ok === true ? read.path : null };
    }),
  );
  const { targets, unprobed } = chooseProbeTargets(facts.networks.map((n) => ({ name: n.name, driver: n.driver })), containers);
  const { probeFromNamespace } = await import('../shell/probe.js');
  const outcomes = await runProbes(targets, config.endpoints, probeFromNamespace, PROBE_DEFAULTS);
  return buildProbeReport(outcomes, unprobed);
}

/** The probe's results as the metrics take them (1 = blocked). */
export function probeSamples(report: ProbeReport): ProbeSample[] {
  return report.networks.flatMap((n) => n.endpoints.filter((e) => e.verdict === 'blocked' || e.verdict === 'exposed').map((e) => ({ network: n.network, endpoint: e.endpoint, blocked: e.verdict === 'blocked' })));
}
