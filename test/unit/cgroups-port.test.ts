import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { CGROUP2_SUPER_MAGIC, toCgroupPath } from '../../src/core/cgroup.js';
import { CommandError } from '../../src/errors.js';
import { createCgroups } from '../../src/shell/cgroups.js';
import type { ProcessResult, RunProcess } from '../../src/shell/exec.js';

/** The adapter's decisions with a recording runner and a /proc of our own making. */
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function fakeProc(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), 'imdsg-proc-'));
  dirs.push(d);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(d, name, '..'), { recursive: true });
    writeFileSync(join(d, name), text);
  }
  return d;
}

function recorder(result: Partial<ProcessResult>): { run: RunProcess; calls: { file: string; args: readonly string[]; input: string | undefined }[] } {
  const calls: { file: string; args: readonly string[]; input: string | undefined }[] = [];
  const run: RunProcess = async (file, args, opts) => {
    calls.push({ file, args, input: opts?.input });
    return { code: 0, stdout: '', stderr: '', ...result };
  };
  return { run, calls };
}

const MATCHES = 'tcp\ncgroup\ncgroup\ncomment\n';

test('hasCgroupMatch runs the backend and family asked for, with --test, a scratch chain and the lock wait', async () => {
  const { run, calls } = recorder({});
  const port = createCgroups(run, { lockWaitSeconds: 7, proc: fakeProc({ 'net/ip6_tables_matches': MATCHES }) });
  assert.equal((await port.hasCgroupMatch('ipv6', 'legacy')).available, true);
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.file, 'ip6tables-legacy-restore');
  assert.deepEqual(calls[0]!.args, ['--test', '--noflush', '-w', '7']);
  assert.equal(calls[0]!.input, '*filter\n:IMDS-GUARD-PROBE - [0:0]\n-A IMDS-GUARD-PROBE -m cgroup --path / -j RETURN\nCOMMIT\n');
});

test('hasCgroupMatch: iptables refusing the match (exit 2) means no match, whatever the kernel lists', async () => {
  const { run } = recorder({ code: 2, stderr: "iptables-restore: unknown option \"--path\"\nError occurred at line: 3\n" });
  const probe = await createCgroups(run, { lockWaitSeconds: 5, proc: fakeProc({ 'net/ip_tables_matches': MATCHES }) }).hasCgroupMatch('ipv4', 'nft');
  assert.equal(probe.available, false);
  assert.match(probe.why, /--test refused -m cgroup --path \(exit 2\): iptables-restore: unknown option/);
});

test('hasCgroupMatch: --test passing is not enough; the kernel must list the match', async () => {
  const { run } = recorder({ code: 0, stderr: 'Warning: Extension cgroup revision 0 not supported, missing kernel module?\n' });
  const probe = await createCgroups(run, { lockWaitSeconds: 5, proc: fakeProc({ 'net/ip_tables_matches': 'tcp\ncomment\n' }) }).hasCgroupMatch('ipv4', 'nft');
  assert.equal(probe.available, false);
  assert.match(probe.why, /the kernel has no cgroup match/);
});

test('hasCgroupMatch: a kernel without xtables at all has no match', async () => {
  const { run } = recorder({});
  const probe = await createCgroups(run, { lockWaitSeconds: 5, proc: fakeProc({}) }).hasCgroupMatch('ipv4', 'nft');
  assert.equal(probe.available, false);
  assert.match(probe.why, /ip_tables_matches is missing/);
});

test('hasCgroupMatch: the legacy lock held is an error, not a missing match', async () => {
  const { run } = recorder({ code: 4, stderr: 'Another app is currently holding the xtables lock.\n' });
  const port = createCgroups(run, { lockWaitSeconds: 5, proc: fakeProc({ 'net/ip_tables_matches': MATCHES }) });
  await assert.rejects(port.hasCgroupMatch('ipv4', 'legacy'), (e) => e instanceof CommandError && e.code === 'lock-held');
});

test('hierarchy reads mountinfo; a pure v1 host has none, and then no inode and no directory', async () => {
  const { run } = recorder({});
  const v1 = createCgroups(run, { lockWaitSeconds: 5, proc: fakeProc({ 'self/mountinfo': '32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n' }) });
  const h = await v1.hierarchy();
  assert.equal(h.root, null);
  assert.match(h.problem ?? '', /no cgroup v2 hierarchy \(cgroup v1 only\)/);
  assert.equal(await v1.inode(toCgroupPath('/docker')!), null);
  assert.equal(await v1.ensureDir(toCgroupPath('/docker')!), false);
});

test('hierarchy: a cgroup2 mount of cgroups above our namespace root (/..) is a private cgroup namespace, not a v1 host', async () => {
  const { run } = recorder({});
  const port = createCgroups(run, { lockWaitSeconds: 5, proc: fakeProc({ 'self/mountinfo': '41 31 0:38 /.. /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n' }) });
  const h = await port.hierarchy();
  assert.equal(h.root, null);
  assert.match(h.problem ?? '', /^the agent is in a private cgroup namespace \(the cgroup2 mount at \/sys\/fs\/cgroup\/unified shows its root as \/\.\., above the root of ours\)/);
});

// ---------------------------------------------------------------- a configured root (the host's tree in a container)

const TMPFS_MAGIC = 0x01021994;

/** A stand-in for statfs over a stand-in for the host's /sys/fs/cgroup (fakeProc): the type of each directory named. */
const typesOf = (root: string, types: Record<string, number | null>) => {
  const asked: string[] = [];
  const fsType = async (p: string): Promise<number | null> => {
    asked.push(p);
    const rel = p === root ? '.' : p.slice(root.length + 1);
    return types[rel] ?? null;
  };
  return { fsType, asked };
};
/** mountinfo with a cgroup2 mount at `point` whose root field is `root`. */
const mountedAt = (point: string, root: string): string => `119 109 0:38 ${root} ${point} rw,relatime - cgroup2 cgroup2 rw\n`;

test('hierarchy under a configured root on a hybrid host: root/unified, told by its filesystem type, its mount at the root of our namespace', async () => {
  const { run } = recorder({});
  const root = fakeProc({ 'unified/docker/.keep': '' });
  const { fsType, asked } = typesOf(root, { '.': TMPFS_MAGIC, unified: CGROUP2_SUPER_MAGIC });
  const port = createCgroups(run, { lockWaitSeconds: 5, root: `${root}/`, fsType, proc: fakeProc({ 'self/mountinfo': mountedAt(join(root, 'unified'), '/') }) });
  assert.deepEqual(await port.hierarchy(), { root: join(root, 'unified'), problem: null });
  assert.notEqual(await port.inode(toCgroupPath('/docker')!), null, 'paths are looked up under root/unified');
  await port.hierarchy();
  assert.equal(asked.length, 2, 'looked at once');
});

test('hierarchy under a configured root on a pure v2 host: the root itself', async () => {
  const { run } = recorder({});
  const root = fakeProc({});
  const { fsType } = typesOf(root, { '.': CGROUP2_SUPER_MAGIC, unified: null });
  const port = createCgroups(run, { lockWaitSeconds: 5, root, fsType, proc: fakeProc({ 'self/mountinfo': mountedAt(root, '/') }) });
  assert.deepEqual(await port.hierarchy(), { root, problem: null });
});

const unusable: readonly [string, (root: string) => string, RegExp][] = [
  ['seen from a private cgroup namespace (/../..)', (root) => mountedAt(join(root, 'unified'), '/../..'), /^the agent is in a private cgroup namespace .*default-cgroupns-mode/],
  ['a bind mount of a subtree', (root) => mountedAt(join(root, 'unified'), '/docker'), /subtree \/docker/],
  ['not in mountinfo at all (a copy, a link)', () => '', /no cgroup2 mount at/],
];
for (const [what, mountinfo, problem] of unusable) {
  test(`hierarchy under a configured root ${what}: found, but our rules could not name its cgroups`, async () => {
    const { run } = recorder({});
    const root = fakeProc({});
    const { fsType } = typesOf(root, { '.': TMPFS_MAGIC, unified: CGROUP2_SUPER_MAGIC });
    const h = await createCgroups(run, { lockWaitSeconds: 5, root, fsType, proc: fakeProc({ 'self/mountinfo': mountinfo(root) }) }).hierarchy();
    assert.equal(h.root, join(root, 'unified'));
    assert.match(h.problem ?? '', problem);
  });
}

const missingRoots: readonly [string, Record<string, number | null>, RegExp][] = [
  ['not mounted at all', {}, /cannot be read: mount the host's \/sys\/fs\/cgroup there/],
  ['a v1-only tree', { '.': TMPFS_MAGIC }, /neither .* nor .*unified is a cgroup2 mount/],
];
for (const [what, types, problem] of missingRoots) {
  test(`hierarchy under a configured root that is ${what}: none, and why`, async () => {
    const { run } = recorder({});
    const root = fakeProc({});
    const port = createCgroups(run, { lockWaitSeconds: 5, root, fsType: typesOf(root, types).fsType, proc: fakeProc({}) });
    const h = await port.hierarchy();
    assert.equal(h.root, null);
    assert.match(h.problem ?? '', problem);
    assert.equal(await port.inode(toCgroupPath('/docker')!), null);
  });
}

test('cgroupOfPid parses /proc/<pid>/cgroup, and a gone or nonsensical pid is null', async () => {
  const { run } = recorder({});
  const port = createCgroups(run, { lockWaitSeconds: 5, proc: fakeProc({ '42/cgroup': '4:memory:/docker/x\n0::/docker/x\n', '43/cgroup': '0::/../x\n' }) });
  assert.deepEqual(await port.cgroupOfPid(42), { ok: true, path: '/docker/x' });
  const outside = await port.cgroupOfPid(43);
  assert.equal(outside?.ok, false);
  assert.equal(await port.cgroupOfPid(44), null);
  assert.equal(await port.cgroupOfPid(0), null);
  assert.equal(await port.cgroupOfPid(-1), null);
  assert.equal(await port.cgroupOfPid(1.5), null);
});
