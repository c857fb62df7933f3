import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Lab } from './lab.js';
import { type ProcResult, runProc } from './proc.js';

/**
 * The Swarm service form of imds-guard (Dockerfile, deploy/stack.yml, scripts/agent-image)
 * driven against a lab's dockerd. Every docker command here names the lab's socket with
 * -H and runs with the lab's DOCKER_CONFIG, so nothing reaches this machine's own daemon.
 */

/** One line of the agent's pino JSON log. */
export interface AgentLogLine {
  readonly time: string;
  readonly msg: string;
  readonly event?: string;
  readonly backend?: string;
  readonly signal?: string;
  readonly reasons?: readonly string[];
  readonly [key: string]: unknown;
}

/** A docker CLI binary and the version it reports. */
export interface DockerCli {
  readonly path: string;
  readonly version: string;
}

/**
 * The environment for a docker CLI aimed at the lab: no DOCKER_* or IMDS_GUARD_* from the
 * caller (a stray DOCKER_CONTEXT or IMDS_GUARD_DOCKER_HOST would redirect it), plus `extra`.
 */
export function labCliEnv(lab: Lab, extra: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('DOCKER_') && !k.startsWith('IMDS_GUARD_')) env[k] = v;
  }
  return { ...env, DOCKER_CONFIG: join(lab.dir, 'cli'), ...extra };
}

/** `cli -H <lab> args` with the stack variables in its environment. Never throws on a non-zero exit. */
export function dockerWith(lab: Lab, cli: string, args: readonly string[], vars: Readonly<Record<string, string>> = {}, timeoutMs = 60_000): Promise<ProcResult> {
  return runProc(cli, ['-H', lab.dockerHost, ...args], { env: labCliEnv(lab, vars), timeoutMs });
}

/**
 * The docker CLIs installed here, one per binary: the one on PATH, and Debian's docker.io
 * at /usr/bin/docker when PATH finds another. The first is the one whose version matches
 * the lab's engine (what a 20.10 host deploys with), else PATH's.
 */
export async function dockerClis(lab: Lab): Promise<DockerCli[]> {
  const seen = new Map<string, DockerCli>();
  for (const candidate of ['docker', '/usr/bin/docker', '/usr/local/bin/docker']) {
    const r = await dockerWith(lab, candidate, ['version', '--format', '{{.Client.Version}} {{.Server.Version}}']).catch(() => null);
    if (r === null || r.code !== 0) continue;
    const which = candidate.includes('/') ? candidate : (await runProc('sh', ['-c', 'command -v docker'])).stdout.trim();
    const real = realpathSync(which);
    if (!seen.has(real)) seen.set(real, { path: which, version: r.stdout.trim().split(' ')[0] ?? '' });
  }
  const server = (await lab.docker(['version', '--format', '{{.Server.Version}}'])).stdout.trim();
  const minor = (v: string): string => v.split('.').slice(0, 2).join('.');
  return [...seen.values()].sort((a, b) => Number(minor(b.version) === minor(server)) - Number(minor(a.version) === minor(server)));
}

/** Polls `probe` every `everyMs` until it returns a value other than undefined; throws `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, everyMs = 500): Promise<T> {
  const t0 = performance.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** The id of the service's running task container on the lab's node, or undefined. */
export async function taskContainer(lab: Lab, service: string): Promise<string | undefined> {
  const r = await lab.docker(['ps', '-q', '--no-trunc', '--filter', `label=com.docker.swarm.service.name=${service}`]);
  const ids = r.stdout.split('\n').filter((l) => l.trim() !== '');
  return ids.length === 1 ? ids[0] : undefined;
}

/** The service's tasks that Swarm wants running: one line per task, e.g. "Running 3 seconds ago". */
export async function desiredRunningTasks(lab: Lab, service: string): Promise<{ node: string; state: string }[]> {
  const r = await lab.docker(['service', 'ps', '--filter', 'desired-state=running', '--format', '{{.Node}}\t{{.CurrentState}}', service]);
  if (r.code !== 0) throw new Error(`docker service ps ${service}: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l !== '').map((l) => {
    const [node = '', state = ''] = l.split('\t');
    return { node, state };
  });
}

/** Parses the agent's JSON lines out of `docker service logs --raw` (or `docker logs`) output. */
export function parseAgentLog(text: string): AgentLogLine[] {
  const lines: AgentLogLine[] = [];
  for (const raw of text.split('\n')) {
    const start = raw.indexOf('{');
    if (start < 0) continue;
    try {
      const v = JSON.parse(raw.slice(start)) as unknown;
      if (v !== null && typeof v === 'object' && typeof (v as AgentLogLine).msg === 'string') lines.push(v as AgentLogLine);
    } catch {
      // Not one of the agent's lines (a docker warning, a partial read).
    }
  }
  return lines;
}

/** Everything the service's tasks logged so far, as the agent's JSON lines. */
export async function serviceLog(lab: Lab, service: string): Promise<AgentLogLine[]> {
  const r = await lab.docker(['service', 'logs', '--raw', service]);
  return parseAgentLog(r.stdout + r.stderr);
}

/** The agent's JSON lines from one container (`docker logs`): unlike `docker service logs`, there before the task counts as running. */
export async function containerLog(lab: Lab, container: string): Promise<AgentLogLine[]> {
  const r = await lab.docker(['logs', container]);
  return parseAgentLog(r.stdout + r.stderr);
}

/** A container's PID 1 network namespace, as `readlink /proc/1/ns/net` prints it. */
export async function containerNetns(lab: Lab, container: string): Promise<string> {
  const r = await lab.docker(['exec', container, 'readlink', '/proc/1/ns/net']);
  if (r.code !== 0) throw new Error(`docker exec readlink: ${r.stderr}`);
  return r.stdout.trim();
}

export interface ContainerEvent {
  readonly action: string;
  readonly atMs: number;
  readonly attributes: Readonly<Record<string, string>>;
}

/** The daemon's kill and die events of `container` between `sinceMs` and now (epoch ms). */
export async function stopEvents(lab: Lab, container: string, sinceMs: number): Promise<ContainerEvent[]> {
  const r = await lab.docker([
    'events', '--since', (sinceMs / 1000).toFixed(3), '--until', (Date.now() / 1000).toFixed(3),
    '--filter', `container=${container}`, '--filter', 'event=kill', '--filter', 'event=die', '--format', '{{json .}}',
  ]);
  return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => {
    const e = JSON.parse(l) as { Action: string; timeNano: number; Actor?: { Attributes?: Record<string, string> } };
    return { action: e.Action, atMs: e.timeNano / 1e6, attributes: e.Actor?.Attributes ?? {} };
  });
}
