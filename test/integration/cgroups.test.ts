import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { toCgroupPath } from '../../src/core/cgroup.js';
import { type Backend, type Family } from '../../src/core/family.js';
import { createCgroups } from '../../src/shell/cgroups.js';
import { type RunProcess, runProcess } from '../../src/shell/exec.js';
import { type TestCgroup, cgroup2Mount, createTestCgroup } from '../helpers/cgroup.js';
import { type Netns, createNetns } from '../helpers/netns.js';

/**
 * `-m cgroup --path` against the real kernel, both backends and families, in a throwaway
 * network namespace with the endpoints on its own `lo`; clients are processes this test
 * starts and moves into a test cgroup of its own. What issue 12's OUTPUT rules rely on:
 * a reset for sockets of the cgroup and its descendants, nothing for anyone else, a
 * refusal for a path that does not exist, and a rule that silently goes blind when its
 * cgroup is re-created. Plus the CgroupPort adapter on the same kernel.
 */
const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((b) => existsSync(b));
const mount = cgroup2Mount();
const why = process.getuid?.() !== 0 ? 'needs root' : mount === null ? 'no cgroup2 hierarchy' : BUSYBOX === undefined ? 'busybox is not installed' : null;
// In CI the capability is there (scripts/install-deps): a missing one is a failure, not a skip.
const skip = why !== null && process.env.CI !== 'true' ? why : false;

const ADDR: Record<Family, string> = { ipv4: '169.254.169.254', ipv6: 'fd00:ec2::254' };
const PORT = 80;
const CASES: readonly [Family, Backend][] = [['ipv4', 'nft'], ['ipv6', 'nft'], ['ipv4', 'legacy'], ['ipv6', 'legacy']];
const iptables = (f: Family, b: Backend, verb = ''): string => `${f === 'ipv4' ? 'iptables' : 'ip6tables'}-${b}${verb}`;
/** iptables-save -t filter without its dated comments and chain counters (legacy counts packets). */
const saveFilter = (f: Family, b: Backend): string =>
  ns.check(iptables(f, b, '-save'), ['-t', 'filter']).replace(/^#.*\n/gm, '').replace(/\[\d+:\d+\]/g, '[0:0]');

let ns: Netns;
let cg: TestCgroup;
let listener: ChildProcess | undefined;

before(async () => {
  if (skip !== false) return;
  assert.equal(why, null, why ?? '');
  ns = createNetns('cgroups');
  ns.check('ip', ['link', 'set', 'lo', 'up']);
  ns.check('ip', ['addr', 'add', `${ADDR.ipv4}/32`, 'dev', 'lo']);
  ns.check('ip', ['-6', 'addr', 'add', `${ADDR.ipv6}/128`, 'dev', 'lo', 'nodad']);
  cg = createTestCgroup();
  const server = `const net = require('net'); let n = 0;
    for (const h of ${JSON.stringify(Object.values(ADDR))}) net.createServer((s) => s.end('HELLO\\n')).listen(${PORT}, h, () => { if (++n === 2) console.log('ready'); });`;
  listener = spawn('nsenter', [`--net=${ns.path}`, process.execPath, '-e', server], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    listener!.stdout!.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
    listener!.once('exit', (code) => reject(new Error(`the listener exited (${code})`)));
  });
});

after(() => {
  if (listener?.pid !== undefined) process.kill(listener.pid, 'SIGKILL');
  cg?.destroy();
  ns?.destroy();
});

/** What a client in cgroup `path` (ours when null) gets from the endpoint: the answer, or refused. */
async function connect(path: string | null, family: Family): Promise<'answered' | 'refused' | string> {
  const r = await cg.runIn(path, 'nsenter', [`--net=${ns.path}`, BUSYBOX!, 'nc', '-w', '2', ADDR[family], String(PORT)]);
  if (r.code === 0 && r.stdout === 'HELLO\n') return 'answered';
  if (/Connection refused/.test(r.stderr)) return 'refused';
  return `exit ${r.code}: ${r.stdout}${r.stderr}`;
}

const rejectArgs = (family: Family, path: string): string[] =>
  ['-t', 'filter', '-A', 'OUTPUT', '-d', ADDR[family], '-p', 'tcp', '--dport', String(PORT), '-m', 'cgroup', '--path', path, '-j', 'REJECT', '--reject-with', 'tcp-reset'];

for (const [family, backend] of CASES) {
  test(`${iptables(family, backend)}: a cgroup rule resets its cgroup and descendants, spares others, and goes blind when the cgroup is re-created`, { skip }, async () => {
    assert.equal(await connect(cg.child, family), 'answered', 'control: no rule yet');
    ns.check(iptables(family, backend), rejectArgs(family, cg.path));
    try {
      const saved = saveFilter(family, backend);
      const prefix = family === 'ipv4' ? '32' : '128';
      // Matches print in the order given (-p's implicit tcp where --dport came); the path quoted for its '/'.
      assert.match(saved, new RegExp(`^-A OUTPUT -d ${ADDR[family]}/${prefix} -p tcp -m tcp --dport 80 -m cgroup --path "${cg.path}" -j REJECT --reject-with tcp-reset$`, 'm'));
      assert.equal(await connect(cg.path, family), 'refused', 'the cgroup itself');
      assert.equal(await connect(cg.child, family), 'refused', 'a descendant');
      assert.equal(await connect(null, family), 'answered', 'a process outside the cgroup');

      cg.recreate();
      assert.equal(await connect(cg.child, family), 'answered', 'the re-created cgroup is no longer matched');
      assert.equal(saveFilter(family, backend), saved, 'iptables-save still prints the stale rule, unchanged');
    } finally {
      ns.check(iptables(family, backend), ['-t', 'filter', '-F', 'OUTPUT']);
    }
  });

  test(`${iptables(family, backend)}: a rule for a cgroup that does not exist is refused; --test does not notice`, { skip }, () => {
    const missing = `${cg.path}-missing`;
    const r = ns.run(iptables(family, backend), rejectArgs(family, missing));
    assert.equal(r.code, backend === 'nft' ? 4 : 1, r.stderr);
    const payload = `*filter\n-A OUTPUT -m cgroup --path ${missing} -j RETURN\nCOMMIT\n`;
    assert.equal(ns.run(iptables(family, backend, '-restore'), ['--noflush'], { input: payload }).code, backend === 'nft' ? 4 : 1);
    assert.equal(ns.run(iptables(family, backend, '-restore'), ['--noflush', '--test'], { input: payload }).code, 0);
    assert.doesNotMatch(saveFilter(family, backend), /cgroup/);
  });
}

// ---------------------------------------------------------------- the adapter

/** The adapter's processes run inside the test namespace, so its probe reads that one's tables. */
const inNetns = (): RunProcess => (file, args, opts) => runProcess('nsenter', [`--net=${ns.path}`, file, ...args], opts);

for (const [family, backend] of CASES) {
  test(`CgroupPort.hasCgroupMatch(${family}, ${backend}) finds the match and leaves no chain behind`, { skip }, async () => {
    const port = createCgroups(inNetns(), { lockWaitSeconds: 5 });
    const before = saveFilter(family, backend);
    const probe = await port.hasCgroupMatch(family, backend);
    assert.equal(probe.available, true, probe.why);
    assert.equal(saveFilter(family, backend), before);
  });
}

test('CgroupPort.hierarchy finds the cgroup2 mount (/sys/fs/cgroup/unified on a hybrid host), and our rules can name its cgroups', { skip }, async () => {
  assert.deepEqual(await createCgroups(runProcess, { lockWaitSeconds: 5 }).hierarchy(), { root: mount, problem: null });
});

test('CgroupPort.hierarchy under a configured root: /sys/fs/cgroup gives the cgroup2 mount by its filesystem type (unified on a hybrid host), and the mount itself is taken as it is', { skip }, async () => {
  for (const root of ['/sys/fs/cgroup', mount!]) {
    assert.deepEqual(await createCgroups(runProcess, { lockWaitSeconds: 5, root }).hierarchy(), { root: mount, problem: null }, root);
  }
  const none = await createCgroups(runProcess, { lockWaitSeconds: 5, root: '/nonexistent-imdsg-cgroup-root' }).hierarchy();
  assert.equal(none.root, null);
  assert.match(none.problem ?? '', /cannot be read/);
});

/**
 * CgroupPort.hierarchy() as a process in cgroup `path` (ours when null) sees it, in a new
 * cgroup namespace when `privateNs`: the JSON of {configured root, default}.
 */
async function hierarchyFrom(path: string | null, privateNs: boolean): Promise<{ root: string | null; problem: string | null }[]> {
  const script = `const { createCgroups } = await import(${JSON.stringify(new URL('../../src/shell/cgroups.ts', import.meta.url).pathname)});
    const { runProcess } = await import(${JSON.stringify(new URL('../../src/shell/exec.ts', import.meta.url).pathname)});
    const out = [];
    for (const root of ['/sys/fs/cgroup', null]) out.push(await createCgroups(runProcess, { lockWaitSeconds: 5, root }).hierarchy());
    console.log(JSON.stringify(out));`;
  const node = [process.execPath, '--import', 'tsx', '--input-type=module', '-e', script];
  const r = privateNs ? await cg.runIn(path, 'unshare', ['--cgroup', ...node]) : await cg.runIn(path, node[0]!, node.slice(1));
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { root: string | null; problem: string | null }[];
}

test('CgroupPort.hierarchy in the cgroup namespace Docker\'s cgroups are named in: no problem, wherever the agent sits', { skip }, async () => {
  for (const [configured, found] of [await hierarchyFrom(cg.child, false), await hierarchyFrom(null, false)]) {
    assert.deepEqual(configured, { root: mount, problem: null });
    assert.deepEqual(found, { root: mount, problem: null });
  }
});

test('CgroupPort.hierarchy from a private cgroup namespace (unshare --cgroup in a child cgroup): our rules could not name the host\'s cgroups, with either root', { skip }, async () => {
  const [configured, found] = await hierarchyFrom(cg.child, true);
  // The kernel shows the mount's root relative to the new namespace's root (cg.child): /..
  // per level. Configured or found, the tree is there, and our rules could not name it.
  const shown = `/${cg.child.split('/').slice(1).map(() => '..').join('/')}`.replaceAll('.', '\\.');
  assert.equal(configured!.root, mount);
  assert.match(configured!.problem ?? '', new RegExp(`^the agent is in a private cgroup namespace \\(the cgroup2 mount at ${mount} shows its root as ${shown}, above the root of ours\\)`));
  assert.equal(found!.root, null);
  assert.match(found!.problem ?? '', new RegExp(`^the agent is in a private cgroup namespace \\(the cgroup2 mount at ${mount} shows its root as ${shown}, above`));
});

test('CgroupPort.inode, ensureDir and cgroupOfPid on the real hierarchy', { skip }, async () => {
  const port = createCgroups(runProcess, { lockWaitSeconds: 5 });
  const path = toCgroupPath(cg.path)!;
  const nested = toCgroupPath(`${cg.path}/made/by/ensureDir`)!;
  assert.equal(await port.inode(path), cg.inode(cg.path));
  assert.equal(await port.inode(toCgroupPath(`${cg.path}-missing`)!), null);

  assert.equal(await port.ensureDir(nested), true);
  assert.equal(await port.ensureDir(nested), true, 'a second call finds it there');
  assert.ok(existsSync(`${mount}${nested}/cgroup.procs`), 'the kernel made it a cgroup');

  const inCg = await cg.runIn(cg.child, 'cat', ['/proc/self/cgroup']);
  assert.match(inCg.stdout, new RegExp(`^0::${cg.child}$`, 'm'));
  const self = await port.cgroupOfPid(process.pid);
  assert.ok(self?.ok, JSON.stringify(self));
  assert.equal(await port.cgroupOfPid(2 ** 22 + 1), null, 'a pid past pid_max is gone');

  const before = await port.inode(path);
  cg.recreate();
  assert.notEqual(await port.inode(path), before, 'a re-created cgroup has a new inode');
});

test('CgroupPort.cgroupOfPid reads a process this test moved into the cgroup', { skip }, async () => {
  const port = createCgroups(runProcess, { lockWaitSeconds: 5 });
  const sleeper = spawn('sh', ['-c', 'echo $$ > "$0" && exec sleep 30', `${cg.dirOf(cg.child)}/cgroup.procs`], { stdio: 'ignore' });
  try {
    const deadline = Date.now() + 5000;
    let read = await port.cgroupOfPid(sleeper.pid!);
    while (!(read?.ok && read.path === cg.child) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      read = await port.cgroupOfPid(sleeper.pid!);
    }
    assert.deepEqual(read, { ok: true, path: cg.child });
  } finally {
    sleeper.kill('SIGKILL');
    await new Promise((r) => sleeper.once('exit', r));
  }
});
