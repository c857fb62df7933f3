import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  CGROUP2_SUPER_MAGIC,
  type CgroupPath,
  type Coverage,
  type HostCoverageInput,
  type HostNetContainer,
  cgroup2MountRoot,
  cgroup2MountPoint,
  cgroupComment,
  cgroupMatchArgs,
  cgroupPathProblem,
  cgroupRuleReadBack,
  containerCgroupCandidates,
  hostContainerCoverage,
  isUnder,
  mountRootProblem,
  namesContainer,
  parseCgroupComment,
  parseProcCgroup,
  pickContainerCgroup,
  readCgroupPath,
  slicePath,
  toCgroupPath,
  v2HierarchyUnder,
} from '../../src/core/cgroup.js';

const path = (p: string): CgroupPath => {
  const c = toCgroupPath(p);
  assert.ok(c, `${p} should be a valid cgroup path`);
  return c;
};

// ---------------------------------------------------------------- /proc/<pid>/cgroup

const ID = 'a73dd48c6b77a49e0cbfe97ac330bc7b069f524f2492fd53c710c1efe67c84b8';
// What the lab's container showed on this hybrid host (dockerd 20.10, cgroupfs, cgroup-parent /imdsg-cgfacts).
const HYBRID = [
  `9:name=systemd:/imdsg-cgfacts/${ID}`,
  `8:pids:/imdsg-cgfacts/${ID}`,
  `4:memory:/imdsg-cgfacts/${ID}`,
  `1:cpu:/imdsg-cgfacts/${ID}`,
  `0::/imdsg-cgfacts/${ID}`,
  '',
].join('\n');

test('parseProcCgroup: a hybrid host gives the 0:: line, not a v1 one', () => {
  assert.deepEqual(parseProcCgroup(HYBRID), { ok: true, path: `/imdsg-cgfacts/${ID}` });
});

test('parseProcCgroup: a pure v2 host with the systemd driver', () => {
  assert.deepEqual(parseProcCgroup(`0::/system.slice/docker-${ID}.scope\n`), { ok: true, path: `/system.slice/docker-${ID}.scope` });
});

test('parseProcCgroup: the root cgroup is read as /', () => {
  assert.deepEqual(parseProcCgroup('0::/\n'), { ok: true, path: '/' });
});

const badProc: readonly [string, string, RegExp][] = [
  ['a pure v1 host has no 0:: line', '4:memory:/docker/x\n1:cpu:/docker/x\n', /no cgroup v2 \(0::\) line/],
  ['empty text', '', /no cgroup v2/],
  ['two 0:: lines', '0::/a\n0::/b\n', /more than one/],
  ["a cgroup outside the reader's cgroup namespace", '0::/../../docker/x\n', /"\/\.\.\/\.\.\/docker\/x" has a \.\. segment/],
  ['a dead cgroup', '0::/docker/x (deleted)\n', /has a character other than/],
];
for (const [what, text, problem] of badProc) {
  test(`parseProcCgroup refuses ${what}`, () => {
    const r = parseProcCgroup(text);
    assert.equal(r.ok, false);
    if (!r.ok) assert.match(r.problem, problem);
  });
}

// ---------------------------------------------------------------- mountinfo

// This machine's (hybrid): v1 controllers under a tmpfs, cgroup2 at /sys/fs/cgroup/unified.
const HYBRID_MOUNTINFO = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const PURE_V2 = '30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n';

test('cgroup2MountPoint: a hybrid host mounts cgroup2 at /sys/fs/cgroup/unified', () => {
  assert.equal(cgroup2MountPoint(HYBRID_MOUNTINFO), '/sys/fs/cgroup/unified');
});

test('cgroup2MountPoint: a pure v2 host (optional fields before the dash) mounts it at /sys/fs/cgroup', () => {
  assert.equal(cgroup2MountPoint(PURE_V2), '/sys/fs/cgroup');
});

test('cgroup2MountPoint: a pure v1 host has none', () => {
  assert.equal(cgroup2MountPoint(HYBRID_MOUNTINFO.split('\n').filter((l) => !l.includes('cgroup2')).join('\n')), null);
});

test('cgroup2MountPoint: a bind mount of a subtree does not count', () => {
  assert.equal(cgroup2MountPoint('50 24 0:26 /docker/abc /sys/fs/cgroup ro,relatime - cgroup2 cgroup2 rw\n'), null);
});

// What the lab showed, dockerd 20.10 on this hybrid host, the host's /sys/fs/cgroup bind-mounted at /host/sys/fs/cgroup.
const BOUND_HOST_NS = '109 89 0:28 / /host/sys/fs/cgroup ro,relatime - tmpfs tmpfs rw,mode=755\n119 109 0:38 / /host/sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n';
const BOUND_PRIVATE_NS = '109 89 0:28 / /host/sys/fs/cgroup ro,relatime - tmpfs tmpfs rw,mode=755\n119 109 0:38 /../.. /host/sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n';

test('cgroup2MountRoot: the root field of the cgroup2 mount at a point, as the reader\'s cgroup namespace sees it', () => {
  assert.equal(cgroup2MountRoot(BOUND_HOST_NS, '/host/sys/fs/cgroup/unified'), '/');
  assert.equal(cgroup2MountRoot(BOUND_PRIVATE_NS, '/host/sys/fs/cgroup/unified'), '/../..');
  assert.equal(cgroup2MountRoot(BOUND_HOST_NS, '/host/sys/fs/cgroup'), null, 'a tmpfs is not a cgroup2 mount');
  assert.equal(cgroup2MountRoot(BOUND_HOST_NS, '/sys/fs/cgroup/unified'), null);
  assert.equal(cgroup2MountRoot(`${BOUND_HOST_NS}130 109 0:38 /docker /host/sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n`, '/host/sys/fs/cgroup/unified'), '/docker', 'the last mount hides the others');
  assert.equal(cgroup2MountRoot('41 31 0:38 /.. /sys/fs/cgroup/un\\040ified rw - cgroup2 cgroup2 rw\n', '/sys/fs/cgroup/un ified'), '/..', 'escapes decoded');
});

describe('mountRootProblem: can our rules name the cgroups of this mount?', () => {
  const P = '/host/sys/fs/cgroup/unified';
  test("the hierarchy's root seen from our namespace: yes", () => assert.equal(mountRootProblem(P, '/'), null));
  for (const root of ['/..', '/../..']) {
    test(`a root of ${root} (a private cgroup namespace): no, with the fix`, () => {
      const p = mountRootProblem(P, root) ?? '';
      assert.match(p, new RegExp(`^the agent is in a private cgroup namespace \\(the cgroup2 mount at ${P} shows its root as ${root.replaceAll('.', '\\.')}, above the root of ours\\)`));
      assert.match(p, /"default-cgroupns-mode": "host"/);
      assert.match(p, /systemd or OpenRC service/);
    });
  }
  test('a subtree: no', () => assert.match(mountRootProblem(P, '/docker') ?? '', /is of the subtree \/docker, not of the hierarchy's root/));
  test('a name like .. that is not a .. segment is a subtree', () => assert.match(mountRootProblem(P, '/..x') ?? '', /subtree/));
  test('no mount there (a symlink, a copy): no', () => assert.match(mountRootProblem(P, null) ?? '', /no cgroup2 mount at \/host\/sys\/fs\/cgroup\/unified/));
});

test('cgroup2MountPoint: the standard place wins over another mount, and escapes are decoded', () => {
  const other = '60 24 0:26 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n';
  assert.equal(cgroup2MountPoint(other + PURE_V2), '/sys/fs/cgroup');
  assert.equal(cgroup2MountPoint(other), '/mnt/my cgroup');
});

// ---------------------------------------------------------------- path validation

for (const ok of ['/', '/docker', `/docker/${ID}`, '/docker.slice', `/system.slice/docker-${ID}.scope`, '/user.slice/user@1000.service', '/a:b/c=d,e+f']) {
  test(`cgroupPathProblem accepts ${ok}`, () => assert.equal(cgroupPathProblem(ok), null));
}

const badPaths: readonly [string, RegExp][] = [
  ['', /is empty/],
  ['docker', /does not start with \//],
  ['/docker/', /empty segment/],
  ['/docker//x', /empty segment/],
  ['/docker/../etc', /\.\. segment/],
  ['/./docker', /\. segment/],
  ['/do cker', /character other than/],
  ['/docker"x', /character other than/],
  ["/docker'x", /character other than/],
  ['/docker\nx', /character other than/],
  ['/docker$(id)', /character other than/],
  ['/docker`id`', /character other than/],
  ['/dock\\x2der', /character other than/],
  ['/dock*er', /character other than/],
  ['/dockér', /character other than/],
  [`/${'a'.repeat(256)}`, /segment longer than 255/],
  [`/${'a/'.repeat(600)}a`, /longer than 1024/],
];
for (const [p, problem] of badPaths) {
  test(`cgroupPathProblem refuses ${JSON.stringify(p.slice(0, 40))}`, () => {
    assert.match(cgroupPathProblem(p) ?? 'accepted', problem);
    assert.equal(toCgroupPath(p), null);
  });
}

test('isUnder: the parent itself, a child and a grandchild are under it', () => {
  for (const p of ['/docker', '/docker/x', '/docker/x/y']) assert.equal(isUnder(path(p), path('/docker')), true, p);
});

test('isUnder: a sibling sharing a prefix is not under it', () => {
  assert.equal(isUnder(path('/dockerd/x'), path('/docker')), false);
  assert.equal(isUnder(path('/docker'), path('/docker/x')), false);
  assert.equal(isUnder(path('/'), path('/docker')), false);
});

test('isUnder: everything is under /', () => {
  assert.equal(isUnder(path('/a/b'), path('/')), true);
});

test('cgroupMatchArgs names the path for -m cgroup', () => {
  assert.deepEqual(cgroupMatchArgs(path('/docker')), ['-m', 'cgroup', '--path', '/docker']);
});

// ---------------------------------------------------------------- comments

test('cgroupComment records the rule id and the inode, and parses back', () => {
  const text = cgroupComment('0123456789ab', 310);
  assert.equal(text, 'imds-guard:0123456789ab cgino=310');
  assert.deepEqual(parseCgroupComment(text), { id: '0123456789ab', inode: 310 });
});

test('cgroupComment refuses what it could not parse back', () => {
  assert.throws(() => cgroupComment('xyz', 1), RangeError);
  assert.throws(() => cgroupComment('0123456789ab', 0), RangeError);
  assert.throws(() => cgroupComment('0123456789ab', 1.5), RangeError);
  assert.throws(() => cgroupComment('0123456789ab', 2 ** 53), RangeError);
});

for (const bad of [
  'imds-guard:0123456789ab', // a nat rule's comment: no inode
  'imds-guard:0123456789ab cgino=0',
  'imds-guard:0123456789ab cgino=0310',
  'imds-guard:0123456789ab cgino=-1',
  'imds-guard:0123456789ab cgino=310 ',
  'imds-guard:0123456789ab cgino=310 extra',
  'imds-guard:0123456789AB cgino=310',
  'imds-guard:0123456789abc cgino=310',
  'someone-else:0123456789ab cgino=310',
  'imds-guard:0123456789ab cgino=99999999999999999', // past 2^53: would round
  'imds-guard:0123456789ab cgino=9999999999999999',
]) {
  test(`parseCgroupComment refuses ${JSON.stringify(bad)}`, () => assert.equal(parseCgroupComment(bad), null));
}

// ---------------------------------------------------------------- coverage

const HOST_ID = '42f887fc8e424c2aba857c4bfb28fa3f9ebaddc7e4fd05e78fe6609911b69438';
const container = (o: Partial<HostNetContainer> = {}): HostNetContainer => ({
  id: HOST_ID,
  name: '/monitor',
  cgroup: readCgroupPath(`/docker/${HOST_ID}`),
  labels: {},
  joinsHostVia: null,
  ...o,
});
const input = (o: Partial<HostCoverageInput> = {}): HostCoverageInput => ({
  containers: [container()],
  parent: '/docker',
  parentExists: true,
  exemptNames: [],
  cgroupMatch: true,
  cgroupV2: true,
  hierarchyProblem: null,
  ...o,
});
const one = (o: Partial<HostCoverageInput>) => {
  const r = hostContainerCoverage(input(o));
  assert.equal(r.length, 1);
  return r[0]!;
};

const coverageCases: readonly [string, Partial<HostCoverageInput>, Coverage, RegExp][] = [
  ['a container under the parent is covered by the parent rule', {}, 'parent-rule', /under \/docker$/],
  ['a container outside the parent (its own --cgroup-parent) gets its own rule', { containers: [container({ cgroup: readCgroupPath(`/custom/${HOST_ID}`) })] }, 'own-rule', /outside \/docker \(a per-container --cgroup-parent\)/],
  ['the systemd driver without cgroup-parent: no parent, own rule', { parent: null, containers: [container({ cgroup: readCgroupPath(`/system.slice/docker-${HOST_ID}.scope`) })] }, 'own-rule', /Docker has none/],
  ['a parent that does not exist covers nobody', { parentExists: false }, 'own-rule', /\/docker does not exist/],
  ['a parent of / is never used (it would cover the host)', { parent: '/' }, 'own-rule', /"\/" cannot be a parent/],
  ['an invalid parent is never used', { parent: '/docker/../x' }, 'own-rule', /cannot be a parent/],
  ['the allow label exempts', { containers: [container({ labels: { 'imds-guard.allow': 'true' } })] }, 'exempt', /label imds-guard\.allow=true/],
  ['an allow label other than "true" does not exempt', { containers: [container({ labels: { 'imds-guard.allow': 'yes' } })] }, 'parent-rule', /under/],
  ['a name in the configuration exempts, with or without the leading /', { exemptNames: ['monitor'] }, 'exempt', /configuration's exemptions/],
  ['a configured name with a leading / exempts too', { exemptNames: ['/monitor'] }, 'exempt', /exemptions/],
  ['exemption holds on a host that could not cover it anyway', { cgroupV2: false, exemptNames: ['monitor'] }, 'exempt', /exemptions/],
  ['a pure cgroup v1 host cannot cover it', { cgroupV2: false }, 'not-coverable', /no cgroup v2 hierarchy/],
  ['a hierarchy our rules cannot name cannot cover it, and the reason is the problem found', { hierarchyProblem: 'the agent is in a private cgroup namespace' }, 'not-coverable', /^the agent is in a private cgroup namespace$/],
  ['exemption holds in a private cgroup namespace too', { hierarchyProblem: 'private', exemptNames: ['monitor'] }, 'exempt', /exemptions/],
  ['without the cgroup match it cannot be covered', { cgroupMatch: false }, 'not-coverable', /lacks the cgroup path match/],
  ['no 0:: line (a v1-only view) cannot be covered, and says so', { containers: [container({ cgroup: parseProcCgroup('4:memory:/docker/x\n') })] }, 'not-coverable', /no cgroup v2 \(0::\) line/],
  ['an unreadable cgroup cannot be covered', { containers: [container({ cgroup: null })] }, 'not-coverable', /could not be read/],
  ["a cgroup outside the agent's cgroup namespace cannot be covered", { containers: [container({ cgroup: readCgroupPath(`/../docker/${HOST_ID}`) })] }, 'not-coverable', /\.\. segment/],
  ['a container in the root cgroup gets no rule (it would cover the host)', { containers: [container({ cgroup: readCgroupPath('/') })] }, 'not-coverable', /not the container's own/],
  ["a cgroup not named after the container gets no rule (host services may share it)", { parent: null, containers: [container({ cgroup: readCgroupPath('/system.slice') })] }, 'not-coverable', /not the container's own/],
  ['a container id that is not Docker-shaped gets no rule', { parent: null, containers: [container({ id: 'x', cgroup: readCgroupPath('/x') })] }, 'not-coverable', /not the container's own/],
];
for (const [what, o, coverage, reason] of coverageCases) {
  test(`hostContainerCoverage: ${what}`, () => {
    const r = one(o);
    assert.equal(r.coverage, coverage, r.reason);
    assert.match(r.reason, reason);
  });
}

test('hostContainerCoverage: the cgroup comes back validated, for the own rule to name', () => {
  const r = one({ parent: null, containers: [container({ cgroup: readCgroupPath(`/system.slice/docker-${HOST_ID}.scope`) })] });
  assert.equal(r.cgroup, `/system.slice/docker-${HOST_ID}.scope`);
  assert.equal(r.name, 'monitor');
});

test('hostContainerCoverage: an invalid cgroup is never handed on, even for an exempt container', () => {
  const r = one({ exemptNames: ['monitor'], containers: [container({ cgroup: readCgroupPath('/x"y') })] });
  assert.equal(r.coverage, 'exempt');
  assert.equal(r.cgroup, null);
});

test('hostContainerCoverage: a container joining a host-network one is decided on its own cgroup, and says whom it joins', () => {
  const JOIN_ID = '31efa9289a7bec6731bd3462ef06cc0218c07d3de5d0cd4f2935cc7796b1d935';
  const r = hostContainerCoverage(input({
    exemptNames: ['monitor'],
    containers: [container(), container({ id: JOIN_ID, name: '/sidecar', cgroup: readCgroupPath(`/custom/${JOIN_ID}`), joinsHostVia: 'monitor' })],
  }));
  assert.deepEqual(r.map((c) => [c.name, c.coverage]), [['monitor', 'exempt'], ['sidecar', 'own-rule']]);
  assert.match(r[1]!.reason, /joins the host network through monitor/);
});

test('hostContainerCoverage: no containers, no coverage', () => {
  assert.deepEqual(hostContainerCoverage(input({ containers: [] })), []);
});

describe('cgroupRuleReadBack: a cgroup rule of ours read back proves the match', () => {
  const obs = (v4: string[], v6ok = true) =>
    ({
      families: {
        ipv4: { present: true, ours: { ok: true, tables: new Map([['filter', { name: 'filter', chains: ['IMDS-GUARD-OUT'], lines: new Map([['IMDS-GUARD-OUT', v4]]) }]]) }, other: null },
        ipv6: { present: true, ours: v6ok ? { ok: true, tables: new Map() } : { ok: false, why: 'x' }, other: null },
      },
    }) as unknown as Parameters<typeof cgroupRuleReadBack>[0];
  test('a REJECT by cgroup path in IMDS-GUARD-OUT: proven for that family', () => {
    assert.equal(cgroupRuleReadBack(obs(['-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m cgroup --path /docker -m comment --comment "imds-guard:x cgino=5" -j REJECT --reject-with tcp-reset'])), 'ipv4');
  });
  test('no rule, or none with the match: not proven (the probe runs)', () => {
    assert.equal(cgroupRuleReadBack(obs([])), null);
    assert.equal(cgroupRuleReadBack(obs(['-d 169.254.169.254/32 -p tcp -j REJECT'], false)), null);
  });
});

// ---------------------------------------------------------------- the host's tree mounted elsewhere

const TMPFS = 0x01021994;
describe('v2HierarchyUnder: where the v2 hierarchy is in a mounted copy of /sys/fs/cgroup, by filesystem type', () => {
  const cases: readonly [string, { root: number | null; unified: number | null }, string | null, RegExp | null][] = [
    ['a pure v2 host: the root is the cgroup2 mount', { root: CGROUP2_SUPER_MAGIC, unified: null }, '/host/sys/fs/cgroup', null],
    ['a hybrid host: a tmpfs with cgroup2 at unified', { root: TMPFS, unified: CGROUP2_SUPER_MAGIC }, '/host/sys/fs/cgroup/unified', null],
    ['a v1-only host: neither is cgroup2', { root: TMPFS, unified: null }, null, /neither \/host\/sys\/fs\/cgroup nor \/host\/sys\/fs\/cgroup\/unified is a cgroup2 mount/],
    ['nothing mounted there', { root: null, unified: null }, null, /cannot be read: mount the host's \/sys\/fs\/cgroup there/],
  ];
  for (const [what, types, path, problem] of cases) {
    test(what, () => {
      const r = v2HierarchyUnder('/host/sys/fs/cgroup', types);
      assert.equal(r.path, path);
      if (problem === null) assert.equal(r.problem, null);
      else assert.match(r.problem ?? '', problem);
    });
  }
  test('a trailing slash on the root does not double', () => assert.equal(v2HierarchyUnder('/h/', { root: TMPFS, unified: CGROUP2_SUPER_MAGIC }).path, '/h/unified'));
});

// ---------------------------------------------------------------- a container's cgroup by its id

describe('slicePath: a systemd slice unit as its cgroup path', () => {
  const cases: readonly [string, string | null][] = [
    ['system.slice', '/system.slice'],
    ['docker.slice', '/docker.slice'],
    ['docker-ci.slice', '/docker.slice/docker-ci.slice'],
    ['a-b-c.slice', '/a.slice/a-b.slice/a-b-c.slice'],
    ['-.slice', '/'],
    ['docker', null],
    ['docker.scope', null],
    ['-docker.slice', null],
    ['docker-.slice', null],
    ['a--b.slice', null],
    ['/docker.slice', null],
    ['a b.slice', null],
    ['.slice', null],
  ];
  for (const [unit, path] of cases) test(`${JSON.stringify(unit)} -> ${String(path)}`, () => assert.equal(slicePath(unit), path));
});

describe('containerCgroupCandidates: where Docker puts a container by its id', () => {
  const base = { id: ID, driver: 'cgroupfs', containerParent: '', daemonParent: null } as const;
  const cases: readonly [string, Partial<Parameters<typeof containerCgroupCandidates>[0]>, string[]][] = [
    ['cgroupfs, no parent anywhere: /docker/<id>', {}, [`/docker/${ID}`]],
    ["cgroupfs with the daemon's cgroup-parent as configured here", { daemonParent: '/imdsg-swarm' }, [`/imdsg-swarm/${ID}`]],
    ["cgroupfs with the container's own --cgroup-parent, which wins", { daemonParent: '/imdsg-swarm', containerParent: '/custom' }, [`/custom/${ID}`]],
    ['cgroupfs with a relative --cgroup-parent: tried at the root', { containerParent: 'custom' }, [`/custom/${ID}`]],
    ['cgroupfs with a trailing slash', { containerParent: '/custom/' }, [`/custom/${ID}`]],
    ['systemd, no slice anywhere: system.slice', { driver: 'systemd' }, [`/system.slice/docker-${ID}.scope`]],
    ["systemd with the daemon's parent configured here (a path)", { driver: 'systemd', daemonParent: '/docker.slice' }, [`/docker.slice/docker-${ID}.scope`]],
    ["systemd with the container's own slice, nested by its dashes", { driver: 'systemd', daemonParent: '/docker.slice', containerParent: 'ci-runners.slice' }, [`/ci.slice/ci-runners.slice/docker-${ID}.scope`]],
    ['systemd with the root slice', { driver: 'systemd', containerParent: '-.slice' }, [`/docker-${ID}.scope`]],
    ['systemd with a parent that is not a slice: none', { driver: 'systemd', containerParent: '/custom' }, []],
    ['a driver Docker did not name: both', { driver: null }, [`/docker/${ID}`, `/system.slice/docker-${ID}.scope`]],
    ['an id that is not 64 hex digits: none', { id: ID.slice(0, 12) }, []],
    ['an id with a path in it: none', { id: `../${ID.slice(3)}` }, []],
    ['a parent that is not a canonical cgroup path: none', { containerParent: '/x/../y' }, []],
    ['a parent with a character a rule must not hold: none', { containerParent: '/x"y' }, []],
  ];
  for (const [what, o, expected] of cases) test(what, () => assert.deepEqual(containerCgroupCandidates({ ...base, ...o }), expected));
});

describe('pickContainerCgroup: the pid when it is the container, else the cgroup found by id', () => {
  const mine = readCgroupPath(`/imdsg-swarm/${ID}`);
  const nested = readCgroupPath(`/docker/${ID}/init.scope`);
  const stranger = readCgroupPath('/imdsg-swarm/aaaa');
  const found = path(`/imdsg-swarm/${ID}`);
  test('namesContainer: a segment holding the id, not a prefix elsewhere; never for a short id', () => {
    assert.equal(namesContainer(path(`/docker/${ID}`), ID), true);
    assert.equal(namesContainer(path(`/system.slice/docker-${ID}.scope`), ID), true);
    assert.equal(namesContainer(path(`/docker/${ID}/init.scope`), ID), true);
    assert.equal(namesContainer(path('/docker/other'), ID), false);
    assert.equal(namesContainer(path('/docker/abc'), 'abc'), false);
  });
  test('a pid whose cgroup names the container is taken, even inside it', () => {
    assert.deepEqual(pickContainerCgroup(ID, mine, null), mine);
    assert.deepEqual(pickContainerCgroup(ID, nested, found), nested);
  });
  test("a pid that is someone else's here (another pid namespace) loses to the cgroup found by id", () => {
    assert.deepEqual(pickContainerCgroup(ID, stranger, found), { ok: true, path: found });
    assert.deepEqual(pickContainerCgroup(ID, null, found), { ok: true, path: found });
    assert.deepEqual(pickContainerCgroup(ID, parseProcCgroup('0::/../x\n'), found), { ok: true, path: found });
  });
  test('nothing found by id: what the pid gave, problem or nothing included', () => {
    assert.deepEqual(pickContainerCgroup(ID, stranger, null), stranger);
    assert.equal(pickContainerCgroup(ID, null, null), null);
    assert.equal(pickContainerCgroup(ID, parseProcCgroup('0::/../x\n'), null)?.ok, false);
  });
});
