// The Swarm form of imds-guard, for real: the agent image assembled offline by
// scripts/agent-image, deployed with `docker stack deploy -c deploy/stack.yml` as a
// global service on the lab's dockerd 20.10 (Swarm, a fake metadata server, bridge,
// user, custom-named and overlay networks; scripts/lab), then tampered with, stopped
// and removed.
//
// Safety: the lab's dockerd runs in the lab's network namespace, so the stack's
// `host` network is the lab's namespace, not this machine's; test 2 proves that before
// the agent exists, and test 3 that the agent's PID 1 sits there. The stack's bind
// mounts are pointed, through its variables, at the lab's socket and a local.d under the
// lab directory, and the agent at the lab's container parent cgroup (LAB_CGROUP_PARENT).
// The agent covers every container: a catch-all per endpoint in nat PREROUTING, a filter
// FORWARD backstop, and filter OUTPUT rules for host-network containers by cgroup, which
// the task (no host pid namespace) finds by container id in the host's cgroup tree,
// mounted read-only at /host/sys/fs/cgroup. /host/run stays this machine's /run (the lab shares the filesystem):
// that is where the lab's dockerd and iptables take the xtables lock, and the most the
// agent's iptables-legacy would do there is create /run/xtables.lock, the standard path
// (the lab's rules are nft, so here it does not even do that).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, test } from 'node:test';
import { type Capability, capability, requireCapabilities, skipWithout } from '../helpers/capability.js';
import { cgroup2Mount } from '../helpers/cgroup.js';
import { CLI, JUMP_LINE, REPO } from '../helpers/cli.js';
import { LAB_NETWORKS, type Lab, labAvailable, startLab } from '../helpers/lab.js';
import { runProc } from '../helpers/proc.js';
import {
  type AgentLogLine, type DockerCli, containerLog, containerNetns, desiredRunningTasks, dockerClis, dockerWith, labCliEnv, parseAgentLog, serviceLog, stopEvents, taskContainer, waitFor,
} from '../helpers/swarm.js';

const LAB_NAME = 'swarmtest';
const STACK = 'igtest';
const SERVICE = `${STACK}_agent`;
const IMAGE = 'imds-guard:test';
const STACK_FILE = join(REPO, 'deploy/stack.yml');
// A drift check every 2 s instead of every 30 s, so a tamper is seen within the test.
const DRIFT_SCHEDULE = '*/2 * * * * *';
// The stack's stop_grace_period: after it, Swarm sends SIGKILL.
const STOP_GRACE_MS = 5_000;
// A first run debootstraps the base (minutes, from the Debian mirror); later runs reuse .cache/agent-base.
const ASSEMBLY_TIMEOUT_MS = 900_000;

const onPath = (bin: string): boolean => spawnSync('sh', ['-c', 'command -v "$0"', bin]).status === 0;
const lab0 = labAvailable();
const needs: Capability[] = [
  capability('the lab', lab0.ok, lab0.why ?? 'the lab cannot run here'),
  ...['flock', 'iptables-save', 'ip6tables-save'].map((bin) => capability(bin, onPath(bin), `${bin} is not installed (bash scripts/install-deps test)`)),
  capability('debootstrap', existsSync(join(REPO, '.cache/agent-base/.complete')) || onPath('debootstrap'), 'debootstrap is not installed and no agent base is cached (bash scripts/install-deps test)'),
];
const skip = skipWithout(...needs);
const JUMP_COMMENT = '-m comment --comment "imds-guard: metadata endpoint protection"';

/** This machine's nat and filter rules as iptables-save prints them, minus comments and counters. */
function rootRules(tool: 'iptables-save' | 'ip6tables-save'): string {
  const r = spawnSync(tool, [], { encoding: 'utf8' });
  return String(r.stdout).split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]')).join('\n');
}

/** The Dockerfile's final-stage instructions, continuation lines joined. */
function dockerfileInstructions(): Map<string, string> {
  const text = readFileSync(join(REPO, 'Dockerfile'), 'utf8').replace(/\\\n\s*/g, '');
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Z]+)\s+(.*)$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) out.set(m[1], m[2].trim());
  }
  return out;
}

const SECONDS_NS = 1e9;
function durationNs(text: string): number {
  const m = /^(\d+)s$/.exec(text);
  assert.ok(m?.[1] !== undefined, `unexpected duration ${text}`);
  return Number(m[1]) * SECONDS_NS;
}

let lab: Lab | undefined;
let localD = '';
let rulesBefore = { v4: '', v6: '' };
let clis: DockerCli[] = [];
let deployed = false;
let agent = '';
const timings: Record<string, number> = {};

before(async () => {
  if (skip !== false) return;
  requireCapabilities(...needs);
  rulesBefore = { v4: rootRules('iptables-save'), v6: rootRules('ip6tables-save') };
  lab = await startLab(LAB_NAME);
  localD = join(lab.dir, 'local.d');
  mkdirSync(localD);
  clis = await dockerClis(lab);
});

after(async () => {
  // After a failure midway: stop the agent as a service before the lab goes down.
  if (lab !== undefined && deployed) await lab.docker(['stack', 'rm', STACK]);
  await lab?.down();
  if (Object.keys(timings).length > 0) console.log(`swarm test timings (ms): ${JSON.stringify(timings)}`);
});

function theLab(): Lab {
  assert.ok(lab, 'the lab did not come up');
  return lab;
}

/** The stack variables: image, and every bind mount source inside the lab. */
function stackVars(l: Lab): Record<string, string> {
  return {
    IMDS_GUARD_IMAGE: IMAGE,
    IMDS_GUARD_DOCKER_SOCKET: l.dockerHost.replace(/^unix:\/\//, ''),
    IMDS_GUARD_LOCAL_D: localD,
    IMDS_GUARD_DRIFT_SCHEDULE: DRIFT_SCHEDULE,
    // The lab's dockerd puts containers under this, not Docker's default /docker.
    IMDS_GUARD_CGROUP_PARENT: l.cgroupParent,
  };
}

async function natOfLab(l: Lab, tool: 'iptables-nft-save' | 'ip6tables-nft-save', table: 'nat' | 'filter' = 'nat'): Promise<string> {
  const r = await l.inHost(tool, ['-t', table]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

async function agentLogSince(l: Lab, sinceIso: string): Promise<AgentLogLine[]> {
  return (await serviceLog(l, SERVICE)).filter((x) => x.time >= sinceIso);
}

test('scripts/agent-image assembles, offline, an image with the Dockerfile\'s entrypoint, command, workdir and health check', { skip, timeout: ASSEMBLY_TIMEOUT_MS }, async (t) => {
  const l = theLab();
  const t0 = performance.now();
  const r = await runProc('bash', [join(REPO, 'scripts/agent-image'), l.dockerHost, IMAGE], { env: labCliEnv(l), timeoutMs: ASSEMBLY_TIMEOUT_MS });
  timings.assembleImage = Math.round(performance.now() - t0);
  t.diagnostic(`scripts/agent-image: ${timings.assembleImage} ms`);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), IMAGE);

  const inspect = await l.docker(['image', 'inspect', IMAGE, '--format', '{{json .Config}}']);
  assert.equal(inspect.code, 0, inspect.stderr);
  const config = JSON.parse(inspect.stdout) as { Entrypoint: string[]; Cmd: string[]; WorkingDir: string; Env: string[]; Healthcheck: { Test: string[]; Interval: number; Timeout: number; StartPeriod: number; Retries: number } };
  const df = dockerfileInstructions();
  assert.deepEqual(config.Entrypoint, JSON.parse(df.get('ENTRYPOINT') ?? 'null'));
  assert.deepEqual(config.Cmd, JSON.parse(df.get('CMD') ?? 'null'));
  assert.equal(config.WorkingDir, df.get('WORKDIR'));
  for (const kv of (df.get('ENV') ?? '').split(/\s+/)) assert.ok(config.Env.includes(kv), `image Env lacks ${kv}`);
  const hc = /^((?:--\S+\s+)*)CMD\s+(\[.*\])$/.exec(df.get('HEALTHCHECK') ?? '');
  assert.ok(hc?.[1] !== undefined && hc[2] !== undefined, 'the Dockerfile has no exec-form HEALTHCHECK');
  const opt = (name: string): string => new RegExp(`--${name}=(\\S+)`).exec(hc[1] ?? '')?.[1] ?? '';
  assert.deepEqual(config.Healthcheck, {
    Test: ['CMD', ...(JSON.parse(hc[2]) as string[])],
    Interval: durationNs(opt('interval')), Timeout: durationNs(opt('timeout')), StartPeriod: durationNs(opt('start-period')), Retries: Number(opt('retries')),
  });

  // The agent runs from it, and both iptables backends and conntrack are there (Debian bookworm).
  const tools = await l.docker(['run', '--rm', '--pull', 'never', '--network', 'none', '--entrypoint', 'sh', IMAGE, '-c',
    'node /opt/imds-guard/dist/cli.js --version && for t in iptables-nft-restore ip6tables-nft-restore iptables-legacy-restore ip6tables-legacy-restore conntrack; do command -v $t; done']);
  assert.equal(tools.code, 0, tools.stdout + tools.stderr);
  const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
  assert.equal(tools.stdout.split('\n')[0], version);
  assert.equal(tools.stdout.trim().split('\n').length, 6, tools.stdout);
});

test('the lab\'s "host" network is the lab\'s namespace, and every lab network reads the credentials before the deploy', { skip }, async () => {
  const l = theLab();
  const hostNet = await l.docker(['run', '--rm', '--pull', 'never', '--network', 'host', 'imdsg-busybox:latest', 'busybox', 'readlink', '/proc/self/ns/net']);
  assert.equal(hostNet.code, 0, hostNet.stderr);
  assert.equal(hostNet.stdout.trim(), `net:[${statSync(`/run/netns/${l.netns}`).ino}]`);
  assert.notEqual(hostNet.stdout.trim(), `net:[${statSync('/proc/self/ns/net').ino}]`);
  for (const network of LAB_NETWORKS) {
    const p = await l.probe(network);
    assert.ok(p.gotCredentials, `no credentials through ${network} before the deploy:\n${p.output}`);
  }
  const host = await l.probeHost();
  assert.ok(host.gotCredentials, `no credentials from a host-network container before the deploy:\n${host.output}`);
});

test('docker stack deploy runs one agent task per node, PID 1 in the lab\'s host namespace, with NET_ADMIN and the lab\'s mounts', { skip, timeout: 120_000 }, async (t) => {
  const l = theLab();
  const cli = clis[0];
  assert.ok(cli, 'no docker CLI answers the lab');
  t.diagnostic(`deployed with ${cli.path} (client ${cli.version})`);
  const t0 = performance.now();
  // --resolve-image never: the image exists only in the lab's engine; no registry is asked.
  const deploy = await dockerWith(l, cli.path, ['stack', 'deploy', '--resolve-image', 'never', '-c', STACK_FILE, STACK], stackVars(l));
  deployed = true;
  assert.equal(deploy.code, 0, deploy.stderr);
  agent = await waitFor('the agent task container', 60_000, () => taskContainer(l, SERVICE));
  const started = await waitFor('the agent\'s first pass', 30_000, async () => (await containerLog(l, agent)).find((x) => x.event === 'repaired' || x.event === 'reconciled'));
  timings.deployToFirstPass = Math.round(performance.now() - t0);
  t.diagnostic(`stack deploy to the agent's first repair: ${timings.deployToFirstPass} ms`);
  const early = await desiredRunningTasks(l, SERVICE);
  t.diagnostic(`at the first pass: tasks ${JSON.stringify(early)}, ${(await serviceLog(l, SERVICE)).length} line(s) in docker service logs`);
  assert.equal(started.event, 'repaired', 'the first pass installed the protection');

  const spec = JSON.parse((await l.docker(['service', 'inspect', SERVICE, '--format', '{{json .Spec}}'])).stdout) as {
    Mode: { Global?: object };
    TaskTemplate: { ContainerSpec: { CapabilityAdd?: string[]; Mounts: { Source: string; Target: string }[]; Env: string[] } };
  };
  assert.ok(spec.Mode.Global, 'the service is not global');
  assert.deepEqual(spec.TaskTemplate.ContainerSpec.CapabilityAdd, ['CAP_NET_ADMIN', 'CAP_NET_RAW']);
  const mounts = Object.fromEntries(spec.TaskTemplate.ContainerSpec.Mounts.map((m) => [m.Target, m.Source]));
  assert.equal(mounts['/var/run/docker.sock'], stackVars(l).IMDS_GUARD_DOCKER_SOCKET);
  assert.equal(mounts['/host/local.d'], localD);
  assert.equal(mounts['/host/run'], '/run');
  assert.equal(mounts['/host/sys/fs/cgroup'], '/sys/fs/cgroup');
  assert.ok(spec.TaskTemplate.ContainerSpec.Env.includes('IMDS_GUARD_CGROUP_ROOT=/host/sys/fs/cgroup'));
  assert.ok(spec.TaskTemplate.ContainerSpec.Env.includes(`IMDS_GUARD_DRIFT_SCHEDULE=${DRIFT_SCHEDULE}`));
  assert.ok(spec.TaskTemplate.ContainerSpec.Env.includes(`IMDS_GUARD_CGROUP_PARENT=${l.cgroupParent}`));

  const nodes = (await l.docker(['node', 'ls', '-q'])).stdout.trim().split('\n');
  const tasks = await desiredRunningTasks(l, SERVICE);
  assert.equal(tasks.length, nodes.length, `one task per node: ${JSON.stringify(tasks)}`);

  assert.equal(await containerNetns(l, agent), `net:[${statSync(`/run/netns/${l.netns}`).ino}]`);
  const pid1 = await l.docker(['exec', agent, 'sh', '-c', 'tr "\\0" " " </proc/1/cmdline; echo; tr "\\0" "\\n" </proc/1/environ | grep ^XTABLES_LOCKFILE=; stat -c "%d:%i" /host/run']);
  assert.equal(pid1.code, 0, pid1.stderr);
  const [cmdline, lockEnv, hostRun] = pid1.stdout.split('\n');
  // The image's command exec's node with the agent's V8 setting (scripts/imds-guard.sh).
  assert.equal(cmdline?.trim(), '/usr/local/bin/node --max-semi-space-size=1 /opt/imds-guard/dist/cli.js run');
  assert.equal(lockEnv, 'XTABLES_LOCKFILE=/host/run/xtables.lock');
  const run = statSync('/run');
  assert.equal(hostRun, `${run.dev}:${run.ino}`, '/host/run is not this machine\'s /run');

  // Another CLI (e.g. PATH's newer one) reads the same stack into the same service: Swarm sees no change.
  for (const other of clis.slice(1)) {
    const before = (await l.docker(['service', 'inspect', SERVICE, '--format', '{{json .Spec.TaskTemplate}} {{json .Spec.Mode}}'])).stdout;
    const again = await dockerWith(l, other.path, ['stack', 'deploy', '--resolve-image', 'never', '-c', STACK_FILE, STACK], stackVars(l));
    assert.equal(again.code, 0, again.stderr);
    const afterSpec = (await l.docker(['service', 'inspect', SERVICE, '--format', '{{json .Spec.TaskTemplate}} {{json .Spec.Mode}}'])).stdout;
    assert.equal(afterSpec, before, `${other.path} (client ${other.version}) deploys a different service from the same stack`);
    assert.equal(await taskContainer(l, SERVICE), agent, 'the redeploy replaced the task');
    t.diagnostic(`${other.path} (client ${other.version}) deploys the identical service`);
  }
});

test('the agent puts its rules in the nft backend, where Docker\'s chains are: nat catch-all, FORWARD backstop, OUTPUT by cgroup; and writes the boot script to the mounted local.d', { skip }, async () => {
  const l = theLab();
  const applied = (await containerLog(l, agent)).filter((x) => x.msg === 'applied transaction');
  assert.deepEqual([...new Set(applied.map((x) => x.backend))], ['nft']);
  assert.deepEqual([...new Set(applied.map((x) => `${String(x.table)} ${String(x.family)}`))].sort(), ['filter ipv4', 'filter ipv6', 'nat ipv4', 'nat ipv6']);
  const audit = await l.docker(['exec', agent, 'node', '/opt/imds-guard/dist/cli.js', 'audit', '--format', 'json']);
  assert.equal(audit.code, 0, audit.stdout + audit.stderr);
  const report = JSON.parse(audit.stdout) as { protected: boolean; backend: string; findings: { kind: string; message: string }[] };
  assert.equal(report.protected, true);
  assert.equal(report.backend, 'nft');
  assert.match(report.findings.find((f) => f.kind === 'backend')?.message ?? '', /Docker's nat chains are in the nft backend/);
  for (const tool of ['iptables-nft-save', 'ip6tables-nft-save'] as const) {
    const nat = await natOfLab(l, tool);
    assert.ok(nat.includes(JUMP_LINE), `${tool}: no nat jump\n${nat}`);
    assert.match(nat, /^-A IMDS-GUARD -d \S+ -p tcp -m tcp --dport 80 -m comment --comment "?imds-guard:\S+ -j REDIRECT --to-ports 1$/m, `${tool}: no catch-all\n${nat}`);
    assert.doesNotMatch(nat, /-A IMDS-GUARD .*-i /, `${tool}: a per-interface rule in the nat chain\n${nat}`);
    const filter = await natOfLab(l, tool, 'filter');
    assert.ok(filter.includes(`-A FORWARD ${JUMP_COMMENT} -j IMDS-GUARD-FWD`), `${tool}: no backstop jump\n${filter}`);
    assert.match(filter, /^-A IMDS-GUARD-FWD -d \S+ -p tcp -m tcp --dport 80 .*-j REJECT --reject-with tcp-reset$/m, `${tool}: no backstop\n${filter}`);
  }
  const boot = readFileSync(join(localD, 'imds-guard.start'), 'utf8');
  for (const chain of ['IMDS-GUARD', 'IMDS-GUARD-FWD']) assert.match(boot, new RegExp(`^-I \\w+ 1 .*-j ${chain}$`, 'm'), `the boot script has no jump to ${chain}`);
});

for (const network of LAB_NETWORKS) {
  test(`with the service running, a container on ${network} is refused the metadata endpoint`, { skip }, async () => {
    const p = await theLab().probe(network);
    assert.equal(p.gotCredentials, false, p.output);
    assert.equal(p.refused, true, p.output);
  });
}

test('the Swarm task, without the host\'s pid namespace, puts the host-network chain (IMDS-GUARD-OUT, the parent rule with the parent\'s inode) in OUTPUT and the boot script, and finds its own container\'s cgroup by id', { skip }, async () => {
  const l = theLab();
  const mount = cgroup2Mount();
  assert.ok(mount, 'no cgroup2 hierarchy on this machine');
  const parent = l.cgroupParent.replace(/[.]/g, '\\.');
  const inode = statSync(join(mount, l.cgroupParent)).ino;
  for (const tool of ['iptables-nft-save', 'ip6tables-nft-save'] as const) {
    const filter = await natOfLab(l, tool, 'filter');
    assert.ok(filter.includes(`-A OUTPUT ${JUMP_COMMENT} -j IMDS-GUARD-OUT`), `${tool}: no host-network jump\n${filter}`);
    assert.match(filter, new RegExp(`^-A IMDS-GUARD-OUT -d \\S+ -p tcp -m tcp --dport 80 -m cgroup --path "?${parent}"? -m comment --comment "imds-guard:[0-9a-f]{12} cgino=${inode}" -j REJECT --reject-with tcp-reset$`, 'm'), `${tool}: no parent rule for ${l.cgroupParent} (inode ${inode})\n${filter}`);
  }
  const boot = readFileSync(join(localD, 'imds-guard.start'), 'utf8');
  assert.match(boot, /^-I OUTPUT 1 .*-j IMDS-GUARD-OUT$/m, 'the boot script has no jump to IMDS-GUARD-OUT');
  assert.match(boot, new RegExp(`^-A IMDS-GUARD-OUT -d 169\\.254\\.169\\.254/32 -p tcp -m tcp --dport 80 -m cgroup --path ${parent} .*-j REJECT --reject-with tcp-reset$`, 'm'), boot);

  // The task's pids are its own namespace's; Docker's pid of the task is not one of them.
  const dockerPid = (await l.docker(['inspect', agent, '--format', '{{.State.Pid}}'])).stdout.trim();
  const seen = await l.docker(['exec', agent, 'sh', '-c', `grep ^0:: /proc/self/cgroup; readlink /proc/1/ns/pid; [ -e /proc/${dockerPid}/cgroup ] && cat /proc/${dockerPid}/cgroup | grep ^0:: || echo no-pid`]);
  assert.equal(seen.code, 0, seen.stderr);
  assert.notEqual(seen.stdout.split('\n')[2], `0::${l.cgroupParent}/${agent}`, `the task sees Docker's pid ${dockerPid} as itself: it has the host's pid namespace\n${seen.stdout}`);
  const audit = await l.docker(['exec', agent, 'node', '/opt/imds-guard/dist/cli.js', 'audit', '--format', 'json']);
  const report = JSON.parse(audit.stdout) as { protected: boolean; hostContainers: { id: string; cgroup: string | null; coverage: string; reason: string }[] };
  assert.equal(report.protected, true, audit.stdout);
  const self = report.hostContainers.find((c) => c.id === agent);
  assert.deepEqual([self?.coverage, self?.cgroup], ['parent-rule', `${l.cgroupParent}/${agent}`], JSON.stringify(report.hostContainers));
});

test('with the service running, a host-network container is refused the endpoint and a host process is not', { skip }, async () => {
  const host = await theLab().probeHost();
  assert.equal(host.gotCredentials, false, host.output);
  assert.equal(host.refused, true, host.output);
  const process = await theLab().probeHostProcess();
  assert.equal(process.gotCredentials, true, `the host's own process lost the endpoint:\n${process.output}`);
});

test('the image\'s iptables-legacy takes the xtables lock at XTABLES_LOCKFILE under the mounted /host/run', { skip, timeout: 60_000 }, async () => {
  // In a container of its own (--network none: a throwaway namespace, so no legacy table
  // appears in the lab's), with a lab directory as /host/run: the lock file appears there,
  // and while this process holds it, the container's iptables-legacy gives up (exit 4).
  // With the stack's real /run mount, that is the lock the host's iptables takes.
  const l = theLab();
  const dir = join(l.dir, 'lockrun');
  mkdirSync(dir);
  const legacy = (): Promise<{ code: number; stdout: string; stderr: string }> => l.docker(['run', '--rm', '--pull', 'never', '--network', 'none', '--cap-add', 'NET_ADMIN',
    '-e', 'XTABLES_LOCKFILE=/host/run/xtables.lock', '-v', `${dir}:/host/run`, '--entrypoint', 'iptables-legacy', IMAGE, '-w', '1', '-t', 'nat', '-S']);
  const free = await legacy();
  assert.equal(free.code, 0, free.stderr);
  assert.ok(existsSync(join(dir, 'xtables.lock')));
  const holder = spawn('flock', [join(dir, 'xtables.lock'), 'sleep', '20'], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const held = await legacy();
    assert.equal(held.code, 4, held.stdout + held.stderr);
    assert.match(held.stderr, /xtables lock/);
  } finally {
    holder.kill('SIGTERM');
  }
});

test('the task turns healthy: imds-guard status exits 0, Health.Status is healthy, service ps shows Running', { skip, timeout: 120_000 }, async (t) => {
  const l = theLab();
  const status = await l.docker(['exec', agent, 'node', '/opt/imds-guard/dist/cli.js', 'status']);
  assert.equal(status.code, 0, status.stdout + status.stderr);
  // The health check's command, traced: it starts `status` from the CLI's snapshot (the
  // image has no NODE_OPTIONS, and its node is the one that built dist/cli.blob).
  const check = await l.docker(['exec', agent, 'sh', '-x', '/opt/imds-guard/dist/imds-guard', 'status', '--max-age', '120']);
  assert.equal(check.code, 0, check.stdout + check.stderr);
  assert.match(check.stderr, /^\+ exec \/usr\/local\/bin\/node --snapshot-blob \/opt\/imds-guard\/dist\/cli\.blob \/opt\/imds-guard\/dist\/cli\.js status --max-age 120$/m, check.stderr);
  // Swarm 20.10 keeps a task with a health check in "Starting" until the first check
  // passes, which runs one interval (30 s) after start; engines before 25 have no
  // start_interval. Until then `docker service logs` shows nothing of the task, which is
  // why the tamper test below runs after this one.
  const t0 = performance.now();
  const health = await waitFor('Health.Status healthy', 90_000, async () => {
    const h = (await l.docker(['inspect', agent, '--format', '{{.State.Health.Status}}'])).stdout.trim();
    assert.notEqual(h, 'unhealthy');
    return h === 'healthy' ? h : undefined;
  }, 1_000);
  assert.equal(health, 'healthy');
  const tasks = await waitFor('the task Running', 10_000, async () => {
    const ts = await desiredRunningTasks(l, SERVICE);
    return ts.every((x) => x.state.startsWith('Running')) ? ts : undefined;
  });
  t.diagnostic(`waited ${Math.round(performance.now() - t0)} ms more for healthy/Running; tasks ${JSON.stringify(tasks)}`);
});

test('a flushed IMDS-GUARD chain shows up in docker service logs as drift and is repaired by the next check', { skip, timeout: 60_000 }, async (t) => {
  const l = theLab();
  const since = new Date();
  const flush = await l.inHost('iptables', ['-t', 'nat', '-F', 'IMDS-GUARD']);
  assert.equal(flush.code, 0, flush.stderr);
  const repaired = await waitFor('a repair after the tamper', 20_000, async () => (await agentLogSince(l, since.toISOString())).find((x) => x.event === 'repaired'));
  // The agent's own clock (the container shares this machine's): log delivery is not timed.
  timings.tamperToRepair = Date.parse(repaired.time) - since.getTime();
  t.diagnostic(`flush to repair: ${timings.tamperToRepair} ms (drift schedule ${DRIFT_SCHEDULE})`);
  assert.ok(timings.tamperToRepair < 5_000, `repaired ${timings.tamperToRepair} ms after the flush`);
  // Woken by the drift check or, first, by the netfilter monitor.
  assert.ok((repaired.reasons ?? []).some((r: string) => r === 'drift-check' || r === 'netfilter-change'), JSON.stringify(repaired.reasons));
  // Only the IPv4 nat chain was flushed: every drift line says so, and names the missing rules.
  const drift = (await agentLogSince(l, since.toISOString())).filter((x) => x.event === 'drift');
  assert.deepEqual([...new Set(drift.map((x) => `${String(x.kind)} ${String(x.backend)} ${String(x.family)} ${String(x.chain)}`))], ['rule-missing nft ipv4 IMDS-GUARD']);
  assert.match((await natOfLab(l, 'iptables-nft-save')), /^-A IMDS-GUARD -d 169\.254\.169\.254\/32 -p tcp -m tcp --dport 80 .*-j REDIRECT --to-ports 1$/m);
  const p = await l.probe('lab-user');
  assert.equal(p.refused, true, p.output);
});

test('docker stack rm: the agent (PID 1) stops on SIGTERM at once with exit 0, and the rules stay in place', { skip, timeout: 60_000 }, async (t) => {
  const l = theLab();
  // docker logs -f ends when the container stops; Swarm may remove the container right after.
  const logs = dockerWith(l, 'docker', ['logs', '-f', '--since', '1s', agent], {}, 30_000);
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  const rm = await l.docker(['stack', 'rm', STACK]);
  assert.equal(rm.code, 0, rm.stderr);
  deployed = false;
  const events = await waitFor('the agent container to die', 30_000, async () => {
    const es = await stopEvents(l, agent, t0 - 1000);
    return es.some((e) => e.action === 'die') ? es : undefined;
  });
  const kills = events.filter((e) => e.action === 'kill');
  const die = events.find((e) => e.action === 'die');
  assert.ok(die);
  assert.deepEqual(kills.map((e) => e.attributes.signal), ['15'], 'one SIGTERM and no SIGKILL');
  assert.equal(die.attributes.exitCode, '0');
  const termToExit = die.atMs - (kills[0]?.atMs ?? NaN);
  timings.sigtermToExit = Math.round(termToExit);
  timings.stackRmToExit = Math.round(die.atMs - t0);
  t.diagnostic(`SIGTERM to exit: ${timings.sigtermToExit} ms; stack rm to exit: ${timings.stackRmToExit} ms (grace ${STOP_GRACE_MS} ms)`);
  assert.ok(termToExit < 1_500, `the agent took ${termToExit} ms to exit after SIGTERM`);
  assert.ok(die.atMs - t0 < STOP_GRACE_MS + 5_000);
  assert.ok(parseAgentLog((await logs).stdout).some((x) => x.event === 'stopping' && x.signal === 'SIGTERM'), 'no "stopping" log line');

  // Fail closed: no agent, the rules are still there and still refuse.
  await waitFor('the service to be gone', 30_000, async () => ((await l.docker(['service', 'inspect', SERVICE])).code !== 0 ? true : undefined));
  assert.ok((await natOfLab(l, 'iptables-nft-save')).includes(JUMP_LINE));
  const p = await l.probe('lab-overlay');
  assert.equal(p.refused, true, p.output);
});

test('imds-guard remove --no-docker in the lab\'s namespace deletes the rules and the boot script; the endpoint opens again', { skip }, async () => {
  const l = theLab();
  const env = labCliEnv(l);
  const r = await l.inHost(process.execPath, [CLI, 'remove', '--no-docker', '--boot-script-dir', localD], { env });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  for (const tool of ['iptables-nft-save', 'ip6tables-nft-save'] as const) {
    assert.doesNotMatch(await natOfLab(l, tool), /IMDS-GUARD/);
    assert.doesNotMatch(await natOfLab(l, tool, 'filter'), /IMDS-GUARD/);
  }
  assert.equal(existsSync(join(localD, 'imds-guard.start')), false);
  for (const network of ['lab-user', 'lab-custom', 'lab-overlay']) {
    const p = await l.probe(network);
    assert.ok(p.gotCredentials, `${network} still blocked after remove:\n${p.output}`);
  }
  const host = await l.probeHost();
  assert.ok(host.gotCredentials, `a host-network container still blocked after remove:\n${host.output}`);
});

test('this machine\'s own nat and filter tables are unchanged', { skip }, () => {
  assert.equal(rootRules('iptables-save'), rulesBefore.v4);
  assert.equal(rootRules('ip6tables-save'), rulesBefore.v6);
});
