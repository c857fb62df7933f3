import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Logger } from 'pino';
import type { Ports } from '../../src/app/ports.js';
import { observe } from '../../src/app/observe.js';
import { reconcile } from '../../src/app/reconcile.js';
import { type CgroupPath, readCgroupPath } from '../../src/core/cgroup.js';
import type { Config } from '../../src/core/config.js';
import type { DesiredFamily } from '../../src/core/desired.js';
import type { DockerContainer } from '../../src/core/docker-facts.js';
import type { Family } from '../../src/core/family.js';
import { CommandError } from '../../src/errors.js';
import type { CgroupPort } from '../../src/shell/cgroups.js';
import type { DockerPort } from '../../src/shell/docker.js';
import { config, desiredOf, protectedLines, section } from './support.js';

const EMPTY_SAVE = section('nat', []) + section('filter', []) + section('raw', []);
/** What iptables-save prints for a family imds-guard has protected as `want` says. */
const protectedText = (want: DesiredFamily): string => section('nat', protectedLines(want, 'nat')) + section('filter', protectedLines(want, 'filter')) + section('raw', []);

/** What the fakes saw, in order. */
interface Recorder {
  readonly calls: string[];
  readonly payloads: string[];
  readonly warnings: string[];
}

interface FakeHost {
  /** iptables-save per family (nft); a function is called at each save, an Error is thrown. */
  saves: Record<Family, string | Error | (() => string)>;
  onRestore?: (n: number, family: Family, table: string) => void;
  docker?: { containers: DockerContainer[]; driver: string | null };
  /** cgroup path -> inode; ensureDir adds one. */
  cgroups?: Map<string, number>;
  /** What every nft listing answers (the whole ruleset, in JSON and as text; readNativeNft keeps each table's part); default: no native table. */
  nft?: { json: string; text: string } | Error;
  /** Families whose legacy tables are loaded; default none. */
  legacy?: readonly Family[];
}

/**
 * Recording fakes of every port over one host: the nft backend (legacy not loaded), both
 * families present, no boot script directory, no OpenRC. Nothing here touches the machine.
 */
function fakePorts(host: FakeHost): { ports: Ports; rec: Recorder } {
  const rec: Recorder = { calls: [], payloads: [], warnings: [] };
  let restores = 0;
  const cgroups = host.cgroups ?? new Map<string, number>();
  const cg: CgroupPort = {
    hierarchy: async () => ({ root: '/sys/fs/cgroup/unified', problem: null }),
    inode: async (path) => cgroups.get(path) ?? null,
    ensureDir: async (path) => {
      rec.calls.push(`mkdir ${path}`);
      cgroups.set(path, 272);
      return true;
    },
    cgroupOfPid: async (pid) => readCgroupPath(`/docker/${String(pid).padStart(64, '0')}`),
    hasCgroupMatch: async () => ({ available: true, why: 'test' }),
  };
  const docker: DockerPort | null =
    host.docker === undefined
      ? null
      : {
          facts: async () => ({ networks: [], containers: host.docker!.containers, cgroupDriver: host.docker!.driver, cgroupVersion: '2' }),
          containerState: async (id) => ({ pid: host.docker!.containers.find((c) => c.id === id)?.pid ?? 0, cgroupParent: '' }),
          watchNetworks: async () => () => {},
        };
  const ports: Ports = {
    iptables: {
      // The cheap read is exercised against real iptables (integration): here, nothing to list.
      listChains: async (_f, _b, _t, chains) => chains.map(() => null),
      async save(family, backend) {
        rec.calls.push(`save ${family} ${backend}`);
        const s = host.saves[family];
        if (s instanceof Error) throw s;
        return typeof s === 'function' ? s() : s;
      },
      async restore(family, backend, payload) {
        const table = payload.split('\n')[0]!.slice(1);
        rec.calls.push(`restore ${family} ${backend} ${table}`);
        rec.payloads.push(payload);
        host.onRestore?.(++restores, family, table);
      },
      legacyLoaded: async (family) => host.legacy?.includes(family) === true,
      familyPresent: async () => true,
    },
    nft: {
      chains: async () => nftOut(host, 'json', rec),
      tableJson: async () => nftOut(host, 'json', rec),
      tableText: async () => nftOut(host, 'text', rec),
      rulesetJson: async () => nftOut(host, 'json', rec),
      rulesetText: async () => nftOut(host, 'text', rec),
    },
    files: {
      read: async () => null,
      exists: async () => false,
      writeAtomic: async (path) => void rec.calls.push(`write ${path}`),
      remove: async (path) => void rec.calls.push(`remove ${path}`),
      ensureSymlink: async (_target, link) => void rec.calls.push(`link ${link}`),
    },
    cgroups: cg,
    capabilities: { cgroupMatch: async (family, backend) => cg.hasCgroupMatch(family, backend) },
    conntrack: {
      flush: async (e) => {
        rec.calls.push(`conntrack ${e.address}`);
        return { deleted: 0 };
      },
    },
    docker,
    log: { info() {}, debug() {}, error() {}, warn: (_o: unknown, msg: string) => void rec.warnings.push(msg) } as unknown as Logger,
  };
  return { ports, rec };
}

const NO_NATIVE_TABLES = '{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}]}';

function nftOut(host: FakeHost, form: 'json' | 'text', rec: Recorder): string {
  rec.calls.push(`nft ${form}`);
  if (host.nft instanceof Error) throw host.nft;
  return host.nft === undefined ? (form === 'json' ? NO_NATIVE_TABLES : '') : host.nft[form];
}

/** The calls with each run of saves shown as one "observe": the order of saves inside a pass is not behaviour. */
const trace = (calls: readonly string[]): string[] => calls.map((c) => (c.startsWith('save ') || c.startsWith('nft ') ? 'observe' : c)).filter((c, i, all) => c !== 'observe' || all[i - 1] !== 'observe');

const C: Config = config({ backend: 'nft', bootScript: 'always', bootScriptDir: '/tmp/igt-never-written', docker: false });
const WANT = desiredOf(C);
const rejected = (): never => {
  throw new CommandError('iptables-nft-restore rejected the transaction, nothing was applied: line 3 failed', 'restore-failed', 'iptables-nft-restore');
};
const FRESH_PASS = ['restore ipv4 nft nat', 'restore ipv4 nft filter', 'restore ipv6 nft nat', 'restore ipv6 nft filter', 'conntrack 169.254.169.254', 'conntrack fd00:ec2::254', 'write /tmp/igt-never-written/imds-guard.start'];

describe('reconcile with recording fake ports', () => {
  test('a converged host: one observation, no restore, nothing cut and nothing written', async () => {
    const { ports, rec } = fakePorts({ saves: { ipv4: protectedText(WANT.ipv4), ipv6: protectedText(WANT.ipv6) } });
    const r = await reconcile({ ...C, bootScript: 'never' }, ports);
    assert.equal(r.converged, true);
    assert.equal(r.restores, 0);
    assert.equal(r.repaired, false);
    assert.deepEqual(trace(rec.calls), ['observe']);
  });

  test('a fresh host: one transaction per table and family, then the connections cut, then the boot script', async () => {
    const { ports, rec } = fakePorts({ saves: { ipv4: EMPTY_SAVE, ipv6: EMPTY_SAVE } });
    const r = await reconcile(C, ports);
    assert.equal(r.repaired, true);
    assert.equal(r.restores, 4);
    assert.deepEqual(trace(rec.calls), ['observe', ...FRESH_PASS]);
    assert.ok(r.findings.some((f) => f.kind === 'jump-missing' && f.status === 'fail'), 'the findings are what was wrong before the repair');
    assert.equal(r.findings[0]!.kind, 'endpoints');
    assert.equal(r.findings[0]!.message, 'hiding 169.254.169.254:80, [fd00:ec2::254]:80 (the default endpoints: cloud: auto, but DMI was not read; using the default endpoints)');
  });

  test('a transaction rejected once (the table changed under it) is retried after a fresh observation, and the pass completes', async () => {
    const { ports, rec } = fakePorts({ saves: { ipv4: EMPTY_SAVE, ipv6: EMPTY_SAVE }, onRestore: (n) => (n === 1 ? rejected() : undefined) });
    const r = await reconcile(C, ports);
    assert.equal(r.repaired, true);
    assert.deepEqual(trace(rec.calls), ['observe', 'restore ipv4 nft nat', 'observe', ...FRESH_PASS]);
    assert.deepEqual(rec.warnings, ['a table changed under the transaction; observing again']);
  });

  test('a transaction rejected every time is tried 3 times, each after a fresh observation, then thrown as restore-failed (exit 3); nothing else is done', async () => {
    const { ports, rec } = fakePorts({ saves: { ipv4: EMPTY_SAVE, ipv6: EMPTY_SAVE }, onRestore: rejected });
    await assert.rejects(reconcile(C, ports), (e: unknown) => e instanceof CommandError && e.code === 'restore-failed' && e.exitCode === 3);
    assert.deepEqual(trace(rec.calls), ['observe', 'restore ipv4 nft nat', 'observe', 'restore ipv4 nft nat', 'observe', 'restore ipv4 nft nat']);
    assert.equal(rec.warnings.length, 2);
  });

  test('a held xtables lock is not retried: it is thrown at once as lock-held', async () => {
    const { ports, rec } = fakePorts({
      saves: { ipv4: EMPTY_SAVE, ipv6: EMPTY_SAVE },
      onRestore: () => {
        throw new CommandError('iptables-nft-restore: the xtables lock was held by another process for 5s; nothing was applied', 'lock-held', 'iptables-nft-restore');
      },
    });
    await assert.rejects(reconcile(C, ports), (e: unknown) => e instanceof CommandError && e.code === 'lock-held');
    assert.equal(rec.calls.filter((c) => c.startsWith('restore')).length, 1);
  });

  test('report mode observes and plans but never restores, cuts, writes or creates a cgroup', async () => {
    const host = { containers: [{ id: 'a'.repeat(64), name: 'node-exporter', pid: 7, networkMode: 'host', labels: {}, networks: [] }], driver: 'cgroupfs' };
    const { ports, rec } = fakePorts({ saves: { ipv4: EMPTY_SAVE, ipv6: EMPTY_SAVE }, docker: host });
    const r = await reconcile({ ...C, docker: true, mode: 'report' }, ports);
    assert.equal(r.repaired, false);
    assert.equal(r.restores, 0);
    assert.deepEqual(trace(rec.calls), ['observe']);
    assert.ok(r.findings.some((f) => f.kind === 'chain-missing' && f.status === 'fail'));
  });

  test('an unreadable IPv6 table is a FAIL for IPv6, and IPv4 is still repaired', async () => {
    const { ports, rec } = fakePorts({ saves: { ipv4: EMPTY_SAVE, ipv6: new CommandError('ip6tables-nft-save failed (exit 1): x', 'command-failed', 'ip6tables-nft-save') } });
    const r = await reconcile({ ...C, bootScript: 'never' }, ports);
    assert.deepEqual(rec.calls.filter((c) => c.startsWith('restore')), ['restore ipv4 nft nat', 'restore ipv4 nft filter']);
    const f = r.findings.find((x) => x.kind === 'table-unreadable');
    assert.deepEqual([f?.status, f?.family, f?.evidence], ['fail', 'ipv6', ['ip6tables-nft-save failed (exit 1): x']]);
    assert.deepEqual(rec.calls.filter((c) => c.startsWith('conntrack')), ['conntrack 169.254.169.254'], 'only the protected family has its connections cut');
  });
});

describe('observe: the other backend under legacy', () => {
  const LEGACY: Config = config({ backend: 'auto', docker: false });
  const listing = (items: readonly object[]): string => JSON.stringify({ nftables: [{ metainfo: { version: '1.0.6', json_schema_version: 1 } }, ...items] });
  const ipNat = [{ table: { family: 'ip', name: 'nat', handle: 1 } }, { chain: { family: 'ip', table: 'nat', name: 'PREROUTING', handle: 1, type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } }];
  // A foreign table with a base chain before dstnat: readNativeNft reads its rules too.
  const early = [{ table: { family: 'inet', name: 'early', handle: 2 } }, { chain: { family: 'inet', table: 'early', name: 'pre', handle: 1, type: 'filter', hook: 'prerouting', prio: -300, policy: 'accept' } }];
  const saves = { ipv4: section('nat', []), ipv6: section('nat', []) };
  const nftSaves = (calls: readonly string[]): string[] => calls.filter((c) => c.startsWith('save') && c.endsWith(' nft'));

  for (const [what, items, want] of [
    ['no iptables-nft table: no iptables-nft-save runs', [], []],
    ['no iptables-nft table, a foreign table read after the chain list: none either', early, []],
    ['ip nat listed: the IPv4 save runs, not the IPv6 one', ipNat, ['save ipv4 nft']],
    ['ip nat listed beside a foreign table whose rules are read: still the IPv4 save', [...ipNat, ...early], ['save ipv4 nft']],
  ] as const) {
    test(what, async () => {
      const { ports, rec } = fakePorts({ saves, legacy: ['ipv4', 'ipv6'], nft: { json: listing(items), text: '' } });
      await observe(LEGACY, ports);
      assert.deepEqual(nftSaves(rec.calls), want);
    });
  }

  test('nft that cannot list (missing, or failing): both iptables-nft saves run', async () => {
    const { ports, rec } = fakePorts({ saves, legacy: ['ipv4', 'ipv6'], nft: new CommandError('nft: not found', 'command-missing', 'nft') });
    await observe(LEGACY, ports);
    assert.deepEqual(nftSaves(rec.calls).sort(), ['save ipv4 nft', 'save ipv6 nft']);
  });

  test('no legacy table loaded: the iptables-nft saves run without waiting for nft', async () => {
    const { ports, rec } = fakePorts({ saves, nft: { json: listing([]), text: '' } });
    await observe(LEGACY, ports);
    assert.deepEqual(nftSaves(rec.calls).sort(), ['save ipv4 nft', 'save ipv6 nft']);
    assert.ok(rec.calls.indexOf('save ipv4 nft') < rec.calls.indexOf('nft json'), `the saves are spawned before the native listing: ${rec.calls.join(', ')}`);
  });
});

describe('reconcile and host-network containers', () => {
  const HOST_CONTAINER: DockerContainer = { id: 'a'.repeat(64), name: 'node-exporter', pid: 7, networkMode: 'host', labels: {}, networks: [] };

  test('with the cgroupfs driver the parent /docker is made first, and the OUTPUT chain rejects under it, recording its inode', async () => {
    const { ports, rec } = fakePorts({ saves: { ipv4: EMPTY_SAVE, ipv6: EMPTY_SAVE }, docker: { containers: [HOST_CONTAINER], driver: 'cgroupfs' } });
    const r = await reconcile({ ...C, docker: true, bootScript: 'never' }, ports);
    assert.ok(rec.calls.indexOf('mkdir /docker') < rec.calls.findIndex((c) => c.startsWith('restore')), 'the cgroup exists before a rule names it');
    const filter = rec.payloads.find((p) => p.startsWith('*filter') && p.includes('IMDS-GUARD-OUT'))!;
    assert.match(filter, /^-A IMDS-GUARD-OUT -d 169\.254\.169\.254\/32 -p tcp -m tcp --dport 80 -m cgroup --path \/docker -m comment --comment "imds-guard:[0-9a-f]{12} cgino=272" -j REJECT --reject-with tcp-reset$/m);
    assert.match(filter, /^-I OUTPUT 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD-OUT$/m);
    const f = r.findings.find((x) => x.kind === 'host-container')!;
    assert.equal(f.container, 'node-exporter');
    assert.match(f.message, /covered by the parent rule/);
  });

  test('host-network protection switched off: no cgroup is read or made, and no OUTPUT chain is wanted', async () => {
    const { ports, rec } = fakePorts({ saves: { ipv4: EMPTY_SAVE, ipv6: EMPTY_SAVE }, docker: { containers: [HOST_CONTAINER], driver: 'cgroupfs' } });
    const r = await reconcile({ ...C, docker: true, hostNetwork: false, bootScript: 'never' }, ports);
    assert.equal(r.hostNet, null);
    assert.ok(!rec.calls.some((c) => c.startsWith('mkdir')));
    assert.ok(rec.payloads.every((p) => !p.includes('IMDS-GUARD-OUT')));
  });

  test('with the systemd driver and no parent configured, no parent is made; a container in its own scope gets a rule of its own', async () => {
    const id = 'b'.repeat(64);
    const scope = `/system.slice/docker-${id}.scope` as CgroupPath;
    const { ports, rec } = fakePorts({ saves: { ipv4: EMPTY_SAVE, ipv6: EMPTY_SAVE }, docker: { containers: [{ ...HOST_CONTAINER, id }], driver: 'systemd' }, cgroups: new Map([[scope, 900]]) });
    ports.cgroups.cgroupOfPid = async () => readCgroupPath(scope);
    const r = await reconcile({ ...C, docker: true, bootScript: 'never' }, ports);
    assert.ok(!rec.calls.some((c) => c.startsWith('mkdir')));
    const filter = rec.payloads.find((p) => p.includes('IMDS-GUARD-OUT'))!;
    assert.match(filter, new RegExp(`-m cgroup --path ${scope.replaceAll('.', '\\.')} -m comment --comment "imds-guard:[0-9a-f]{12} cgino=900"`));
    assert.match(r.findings.find((x) => x.kind === 'host-container')!.message, /covered by a rule of its own/);
  });

  test("without the host's pid namespace (a Swarm task) a container's cgroup is found by its id: the parent it is under, or its own --cgroup-parent", async () => {
    const outside = { ...HOST_CONTAINER, id: 'c'.repeat(64), name: 'custom' };
    const own = `/custom/${outside.id}`;
    const { ports } = fakePorts({
      saves: { ipv4: EMPTY_SAVE, ipv6: EMPTY_SAVE },
      docker: { containers: [HOST_CONTAINER, outside], driver: 'cgroupfs' },
      cgroups: new Map([['/imdsg-swarm', 500], [`/imdsg-swarm/${HOST_CONTAINER.id}`, 501], [own, 502]]),
    });
    // Docker's pids are another namespace's: here they are gone, or someone else.
    ports.cgroups.cgroupOfPid = async () => null;
    ports.docker!.containerState = async (id) => ({ pid: 4242, cgroupParent: id === outside.id ? '/custom' : '' });
    const r = await reconcile({ ...C, docker: true, bootScript: 'never', cgroupParent: '/imdsg-swarm' }, ports);
    assert.deepEqual(r.hostNet!.containers.map((c) => [c.name, c.coverage, c.cgroup]), [['node-exporter', 'parent-rule', `/imdsg-swarm/${HOST_CONTAINER.id}`], ['custom', 'own-rule', own]]);
    assert.deepEqual(r.hostNet!.inodes.get(outside.id), 502);
  });

  test('from a private cgroup namespace no cgroup rule is wanted: the filter transaction carries the FORWARD backstop alone, and the containers are exposed, with the fix', async () => {
    const { ports, rec } = fakePorts({ saves: { ipv4: EMPTY_SAVE, ipv6: EMPTY_SAVE }, docker: { containers: [HOST_CONTAINER], driver: 'cgroupfs' }, cgroups: new Map([['/docker', 272]]) });
    const problem = 'the agent is in a private cgroup namespace (...): run the agent in the host\'s cgroup namespace';
    ports.cgroups.hierarchy = async () => ({ root: '/host/sys/fs/cgroup/unified', problem });
    let probed = 0;
    ports.capabilities.cgroupMatch = async () => (probed++, { available: true, why: 'test' });
    const r = await reconcile({ ...C, docker: true, bootScript: 'never' }, ports);
    assert.deepEqual(rec.calls.filter((c) => c.startsWith('restore')), ['restore ipv4 nft nat', 'restore ipv4 nft filter', 'restore ipv6 nft nat', 'restore ipv6 nft filter']);
    const filters = rec.payloads.filter((p) => p.startsWith('*filter'));
    assert.ok(filters.every((p) => p.includes('IMDS-GUARD-FWD') && !p.includes('IMDS-GUARD-OUT') && !p.includes('-m cgroup')), filters.join('\n'));
    assert.ok(!rec.calls.some((c) => c.startsWith('mkdir')));
    assert.equal(probed, 0, 'no match probe: nothing could use it');
    const f = r.findings.find((x) => x.kind === 'host-container-exposed')!;
    assert.equal(f.message, `host-network container node-exporter is exposed: ${problem}`);
    assert.equal(r.hostNet!.containers[0]!.reason, problem);
  });
});
