import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseProcCgroup } from '../../src/core/cgroup.js';
import { CRED_MARKER, CRED_REQUEST, LAB_IMAGE, MD_ADDR } from '../helpers/agent.js';
import { cgroup2Mount } from '../helpers/cgroup.js';
import { type Lab, type ProbeResult, labAvailable, startLab } from '../helpers/lab.js';

/**
 * Issue 12's ground truth, before any agent: a `--network host` container shares the lab
 * host's stack, so it reads the fake metadata, and so does one joining it with
 * `--network container:`; one filter OUTPUT rule matching the lab's cgroup parent
 * (`-m cgroup --path`) refuses both with a reset while a plain process of the same network
 * namespace, outside Docker's cgroups, still reads it. Then the rule goes and they read
 * it again. The agent's own tests build on these probes.
 */
const NAME = 'e2ehostnet';
const available = labAvailable();
const mount = cgroup2Mount();
const why = !available.ok ? available.why ?? 'no lab' : mount === null ? 'no cgroup2 hierarchy' : null;
// In CI the capability is there: a missing one is a failure, not a skip.
const skip = why !== null && process.env.CI !== 'true' ? why : false;

const TARGET = 'hostnet-target';
// Started with a --cgroup-parent of its own, outside the lab's parent: what a per-container rule is for.
const OWN = 'hostnet-own';

let lab: Lab | undefined;

before(async () => {
  if (skip !== false) return;
  assert.equal(why, null, why ?? '');
  lab = await startLab(NAME);
  for (const [name, extra] of [[TARGET, []], [OWN, ['--cgroup-parent', `${lab.cgroupParent}.own`]]] as const) {
    const r = await lab.docker(['run', '-d', '--pull', 'never', '--network', 'host', '--name', name, ...extra, LAB_IMAGE, 'sleep', '600']);
    assert.equal(r.code, 0, r.stderr);
  }
});

after(async () => {
  await lab?.down();
});

function theLab(): Lab {
  assert.ok(lab, 'the lab did not come up');
  return lab;
}

const ruleArgs = (l: Lab): string[] =>
  ['-d', `${MD_ADDR}/32`, '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-m', 'cgroup', '--path', l.cgroupParent, '-j', 'REJECT', '--reject-with', 'tcp-reset'];

async function iptables(l: Lab, args: readonly string[]): Promise<string> {
  const r = await l.inHost('iptables', args);
  assert.equal(r.code, 0, `iptables ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

const filterRules = async (l: Lab): Promise<string[]> => (await iptables(l, ['-t', 'filter', '-S'])).split('\n').filter((x) => x !== '');

async function execRead(l: Lab, container: string): Promise<string> {
  const r = await l.docker(['exec', container, 'sh', '-c', `printf '${CRED_REQUEST}' | nc -w 3 ${MD_ADDR} 80 2>&1`]);
  return r.stdout + r.stderr;
}

const open = (p: ProbeResult, what: string): void => assert.ok(p.gotCredentials, `${what} got no credentials:\n${p.output}`);
const refused = (p: ProbeResult, what: string): void => {
  assert.equal(p.gotCredentials, false, `${what} still read the credentials:\n${p.output}`);
  assert.ok(p.refused, `${what} was not refused (a reset looks like "Connection refused"):\n${p.output}`);
};

test("the lab's containers land in its own cgroup parent, in the cgroup v2 hierarchy too", { skip }, async () => {
  const l = theLab();
  assert.equal(l.cgroupParent, `/imdsg-${NAME}`);
  const inspect = await l.docker(['inspect', '-f', '{{.Id}} {{.State.Pid}}', TARGET]);
  const [id, pid] = inspect.stdout.trim().split(' ');
  const read = parseProcCgroup(readFileSync(`/proc/${pid}/cgroup`, 'utf8'));
  assert.deepEqual(read, { ok: true, path: `${l.cgroupParent}/${id}` });
  assert.ok(readFileSync(join(mount!, l.cgroupParent, id!, 'cgroup.procs'), 'utf8').split('\n').includes(pid!));
  const info = await l.docker(['info', '--format', '{{.CgroupDriver}} {{.CgroupVersion}}']);
  assert.match(info.stdout, /^cgroupfs [12]$/m);
});

test('control: without any rule, the host-network container, its joiner and a host process all read the fake credentials', { skip }, async () => {
  const l = theLab();
  open(await l.probeHost(), 'a --network host container');
  open(await l.probeJoin(TARGET), `a --network container:${TARGET} container`);
  open(await l.probeHostProcess(), 'a host process outside Docker');
});

test("a filter OUTPUT rule for the lab's cgroup parent refuses host-network containers with a reset, and spares the host's own process", { skip }, async () => {
  const l = theLab();
  const before = await filterRules(l);
  await iptables(l, ['-t', 'filter', '-I', 'OUTPUT', '1', ...ruleArgs(l)]);
  try {
    const saved = await l.inHost('iptables-save', ['-t', 'filter']);
    assert.match(saved.stdout, new RegExp(`^-A OUTPUT -d ${MD_ADDR}/32 -p tcp -m tcp --dport 80 -m cgroup --path "${l.cgroupParent}" -j REJECT --reject-with tcp-reset$`, 'm'));
    const host = await l.probeHost();
    refused(host, 'a --network host container');
    refused(await l.probeJoin(TARGET), `a --network container:${TARGET} container`);
    // A container started before the rule: its sockets are made now, in the parent's subtree.
    assert.match(await execRead(l, TARGET), /Connection refused/);
    open(await l.probeHostProcess(), 'a host process outside Docker');
    // Outside the parent, the parent rule does not see it: the case for a rule of its own.
    assert.ok((await execRead(l, OWN)).includes(CRED_MARKER), 'a container outside the parent was refused');
  } finally {
    await iptables(l, ['-t', 'filter', '-D', 'OUTPUT', ...ruleArgs(l)]);
  }
  assert.deepEqual(await filterRules(l), before, 'the filter table is back as it was');
  open(await l.probeHost(), 'a --network host container, the rule removed');
});

test("down removes the lab's cgroup parent and the lab's per-container parents from every hierarchy", { skip }, async () => {
  const l = theLab();
  await l.down();
  lab = undefined;
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((x) => / - cgroup2? /.test(x)).map((x) => x.split(' ')[4]!);
  assert.ok(mounts.length > 0);
  for (const m of mounts) {
    for (const cg of [`imdsg-${NAME}`, `imdsg-${NAME}.own`]) assert.throws(() => readFileSync(join(m, cg, 'cgroup.procs')), /ENOENT/, `${m}/${cg} is still there`);
  }
});
