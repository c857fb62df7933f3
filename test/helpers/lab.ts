import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { type ProcResult, runProc, stderrTail } from './proc.js';

/**
 * The lab (scripts/lab) seen from TypeScript: a real dockerd with Swarm in a throwaway
 * network namespace, and a fake metadata server at 169.254.169.254 reachable only from
 * it. Tests and the benchmark drive it through this; the script stays the one place that
 * knows how the lab is built, so the demo, the tests and a person at a shell see the same lab.
 */
export interface Lab {
  readonly name: string;
  /** The Docker host's network namespace (under /run/netns). */
  readonly netns: string;
  /** The fake metadata server's network namespace. */
  readonly mdNetns: string;
  /** The lab's state directory, .lab/NAME under the repository. */
  readonly dir: string;
  /** unix:///…/docker.sock of the lab's dockerd. */
  readonly dockerHost: string;
  /**
   * The cgroup the lab's dockerd puts every container under (daemon.json cgroup-parent,
   * `/imdsg-<name>`), relative to each hierarchy's root: on this hybrid host that is
   * /sys/fs/cgroup/unified/imdsg-<name>/<id> for cgroup v2. A test that gives a container
   * its own `--cgroup-parent` names it `${cgroupParent}.<suffix>` so `down` removes it too.
   */
  readonly cgroupParent: string;
  /** The docker CLI against the lab's daemon. Never throws on a non-zero exit. */
  docker(args: readonly string[], opts?: { timeoutMs?: number }): Promise<ProcResult>;
  /** `nsenter --net=/run/netns/<netns> cmd args`. Never throws on a non-zero exit. */
  inHost(cmd: string, args: readonly string[], opts?: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<ProcResult>;
  /** One container on `network` asks the metadata server for the fake role credentials. */
  probe(network: string): Promise<ProbeResult>;
  /** The same over IPv6, to [fd00:ec2::254]:80 (the network must have IPv6; the lab serves the same files there). */
  probe6(network: string): Promise<ProbeResult>;
  /** The same from a `--network host` container (its packets take the host's OUTPUT chain). */
  probeHost(): Promise<ProbeResult>;
  /** The same from a plain process in the lab host's network namespace, outside Docker's cgroups. */
  probeHostProcess(): Promise<ProbeResult>;
  /** The same from a container run with `--network container:<container>`. */
  probeJoin(container: string): Promise<ProbeResult>;
  /** Stops the lab's dockerd and starts it again with the same arguments. */
  restartDocker(): Promise<void>;
  /** Removes everything the lab created. Safe to call more than once. */
  down(): Promise<void>;
}

export interface ProbeResult {
  /** The fake credentials came back: the endpoint is open to that network. */
  readonly gotCredentials: boolean;
  /** The connection was refused (what a REJECT/redirect to a closed port looks like). */
  readonly refused: boolean;
  /** Wall time of the whole probe, container start and removal included. */
  readonly ms: number;
  /** The probe's stdout and stderr. */
  readonly output: string;
}

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const LAB_SCRIPT = join(REPO, 'scripts', 'lab');
// The fake server's AccessKeyId (scripts/lab writes it); no real credential looks like this.
const CRED_MARKER = 'ASIALABFAKE';
// Bring-up is ~7 s here; a first run may also apt-get install docker.io and friends.
const UP_TIMEOUT_MS = 600_000;
const DOWN_TIMEOUT_MS = 120_000;

/** The probe networks every lab has: default bridge, user bridge, custom-named bridge, overlay. */
export const LAB_NETWORKS = ['bridge', 'lab-user', 'lab-custom', 'lab-overlay'] as const;

function onPath(bin: string): boolean {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  return dirs.some((d) => d !== '' && existsSync(join(d, bin)));
}

/** Whether this machine can run a lab; tests skip with `why` when it cannot. */
export function labAvailable(): { ok: boolean; why?: string } {
  if (process.platform !== 'linux') return { ok: false, why: 'the lab needs Linux network namespaces' };
  if (process.getuid?.() !== 0) return { ok: false, why: 'the lab needs root (network namespaces, dockerd)' };
  for (const bin of ['nsenter', 'ip', 'bash']) {
    if (!onPath(bin)) return { ok: false, why: `${bin} is not installed` };
  }
  return { ok: true };
}

async function script(verb: string, args: readonly string[], timeoutMs: number): Promise<ProcResult> {
  const r = await runProc('bash', [LAB_SCRIPT, verb, ...args], { timeoutMs });
  if (r.code !== 0) throw new Error(`scripts/lab ${verb} ${args.join(' ')} exited ${r.code}:\n${stderrTail(r)}`);
  return r;
}

// Labs this process brought up and has not taken down: removed when it exits, even
// after a failed `after` hook or an interrupt, so no dockerd outlives its test run.
const live = new Set<string>();

process.once('exit', () => {
  for (const name of live) spawnSync('bash', [LAB_SCRIPT, 'down', name], { stdio: 'ignore', timeout: DOWN_TIMEOUT_MS });
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => process.exit(130));
}

function readEnv(dir: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(join(dir, 'env'), 'utf8').split('\n')) {
    const m = /^(?:export )?([A-Z_]+)=(.*)$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) env[m[1]] = m[2];
  }
  return env;
}

function required(env: Record<string, string>, key: string, dir: string): string {
  const v = env[key];
  if (v === undefined || v === '') throw new Error(`${join(dir, 'env')} has no ${key}`);
  return v;
}

/** Runs one of scripts/lab's probe verbs: they all print nc's output and exit 0 on credentials. */
async function probeBy(args: readonly string[]): Promise<ProbeResult> {
  const t0 = performance.now();
  const r = await runProc('bash', [LAB_SCRIPT, ...args], { timeoutMs: 60_000 });
  const ms = performance.now() - t0;
  const output = r.stdout + r.stderr;
  return { gotCredentials: r.code === 0 && r.stdout.includes(CRED_MARKER), refused: /Connection refused/.test(output), ms, output };
}

/**
 * Brings lab NAME up with `scripts/lab up` and returns a handle to it. A lab of that
 * name left over from an earlier run is torn down first unless `reuse` is set, so a
 * test never starts from someone else's containers or rules.
 */
export async function startLab(name = 'lab', opts: { reuse?: boolean } = {}): Promise<Lab> {
  const dir = join(REPO, '.lab', name);
  if (!opts.reuse && existsSync(dir)) await script('down', [name], DOWN_TIMEOUT_MS);
  live.add(name);
  await script('up', [name], UP_TIMEOUT_MS);
  const env = readEnv(dir);
  const netns = required(env, 'LAB_NETNS', dir);
  const dockerHost = required(env, 'DOCKER_HOST', dir);
  // -H names the daemon; a caller's DOCKER_CONTEXT or TLS settings must not redirect it.
  const dockerEnv: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: join(dir, 'cli') };
  for (const k of ['DOCKER_HOST', 'DOCKER_CONTEXT', 'DOCKER_TLS_VERIFY', 'DOCKER_CERT_PATH']) delete dockerEnv[k];

  return {
    name,
    netns,
    mdNetns: required(env, 'LAB_MD_NETNS', dir),
    dir: required(env, 'LAB_DIR', dir),
    dockerHost,
    docker: (args, o = {}) => runProc('docker', ['-H', dockerHost, ...args], { env: dockerEnv, timeoutMs: o.timeoutMs }),
    inHost: (cmd, args, o = {}) =>
      runProc('nsenter', [`--net=/run/netns/${netns}`, cmd, ...args], { input: o.input, env: o.env, timeoutMs: o.timeoutMs }),
    cgroupParent: required(env, 'LAB_CGROUP_PARENT', dir),
    probe: (network) => probeBy(['probe', network, name]),
    probe6: (network) => probeBy(['probe6', network, name]),
    probeHost: () => probeBy(['probe-host', name]),
    probeHostProcess: () => probeBy(['probe-host-process', name]),
    probeJoin: (container) => probeBy(['probe-join', container, name]),
    restartDocker: async () => void (await script('restart-docker', [name], DOWN_TIMEOUT_MS)),
    down: async () => {
      await script('down', [name], DOWN_TIMEOUT_MS);
      live.delete(name);
    },
  };
}
