import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type CgroupPath, type HostContainerCoverage, toCgroupPath } from '../../src/core/cgroup.js';
import type { DockerContainer } from '../../src/core/docker-facts.js';
import type { Endpoint } from '../../src/core/endpoint.js';
import { isDrift, needsOperator } from '../../src/core/findings.js';
import { type HostNetObservation, bootHostNetRules, hostContainerFindings, hostNetRules, hostNetworkContainers } from '../../src/core/host-network.js';
import { joinArgs } from '../../src/core/rule.js';

const V4: Endpoint = { family: 'ipv4', address: '169.254.169.254', port: 80 };
const V4B: Endpoint = { family: 'ipv4', address: '168.63.129.16', port: 32526 };
const V6: Endpoint = { family: 'ipv6', address: 'fd00:ec2::254', port: 80 };
const ENDPOINTS = [V4, V4B, V6];

const id = (c: string): string => c.repeat(64);
const path = (p: string): CgroupPath => toCgroupPath(p)!;
const container = (over: Partial<DockerContainer> & Pick<DockerContainer, 'id' | 'name' | 'networkMode'>): DockerContainer => ({ pid: 100, labels: {}, networks: [], ...over });

describe('hostNetworkContainers', () => {
  const host = container({ id: id('a'), name: 'node-exporter', networkMode: 'host' });
  const cases: readonly [string, readonly DockerContainer[], readonly string[]][] = [
    ['--network host shares the host stack', [host], ['node-exporter via -']],
    ['a bridge container does not', [container({ id: id('b'), name: 'web', networkMode: 'bridge' })], []],
    ['--network none does not', [container({ id: id('b'), name: 'sealed', networkMode: 'none' })], []],
    ['a user network does not', [container({ id: id('b'), name: 'app', networkMode: 'mynet' })], []],
    ['container:<full id> of a host-network container joins it', [host, container({ id: id('c'), name: 'sidecar', networkMode: `container:${id('a')}` })], ['node-exporter via -', 'sidecar via node-exporter']],
    ['container:<name> of a host-network container joins it', [host, container({ id: id('c'), name: 'sidecar', networkMode: 'container:node-exporter' })], ['node-exporter via -', 'sidecar via node-exporter']],
    ['container:<short id> of a host-network container joins it', [host, container({ id: id('c'), name: 'sidecar', networkMode: `container:${'a'.repeat(12)}` })], ['node-exporter via -', 'sidecar via node-exporter']],
    ['container:X of a bridge container does not', [container({ id: id('b'), name: 'web', networkMode: 'bridge' }), container({ id: id('c'), name: 'sidecar', networkMode: `container:${id('b')}` })], []],
    ['container:X of a container that is not running (not listed) does not', [container({ id: id('c'), name: 'sidecar', networkMode: `container:${id('f')}` })], []],
  ];
  for (const [what, containers, expected] of cases) {
    test(what, () => assert.deepEqual(hostNetworkContainers(containers).map((h) => `${h.container.name} via ${h.joinsHostVia ?? '-'}`), expected));
  }
});

const cov = (name: string, coverage: HostContainerCoverage['coverage'], cgroup: string | null, c = name[0]!): HostContainerCoverage => ({
  id: id(c),
  name,
  cgroup: cgroup === null ? null : path(cgroup),
  joinsHostVia: null,
  coverage,
  reason: `reason of ${name}`,
});

const EXEMPT = cov('ecs-agent', 'exempt', `/docker/${id('e')}`);
const UNDER = cov('node-exporter', 'parent-rule', `/docker/${id('n')}`);
const OWN = cov('outside', 'own-rule', `/system.slice/docker-${id('o')}.scope`);
const EXPOSED = cov('v1only', 'not-coverable', null);

const observed = (over: Partial<HostNetObservation> = {}): HostNetObservation => ({
  containers: [EXEMPT, UNDER, OWN, EXPOSED],
  parent: { path: path('/docker'), inode: 272 },
  inodes: new Map([
    [EXEMPT.id, 301],
    [OWN.id, 302],
  ]),
  unavailable: null,
  ...over,
});

/** A rule's arguments with its content id hidden, so the structure reads plainly. */
const shape = (args: readonly string[]): string => joinArgs(args).replace(/imds-guard:[0-9a-f]{12}/, 'imds-guard:ID');

describe('hostNetRules: the filter OUTPUT chain of one family', () => {
  test('exempt cgroups return first, then the parent rule per endpoint, then each own-rule container per endpoint; every comment records its inode', () => {
    assert.deepEqual(hostNetRules('ipv4', ENDPOINTS, observed()).map((r) => `${r.purpose} ${shape(r.args)}`), [
      `allow -m cgroup --path /docker/${id('e')} -m comment --comment "imds-guard:ID cgino=301" -j RETURN`,
      'block -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m cgroup --path /docker -m comment --comment "imds-guard:ID cgino=272" -j REJECT --reject-with tcp-reset',
      'block -d 168.63.129.16/32 -p tcp -m tcp --dport 32526 -m cgroup --path /docker -m comment --comment "imds-guard:ID cgino=272" -j REJECT --reject-with tcp-reset',
      `block -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m cgroup --path /system.slice/docker-${id('o')}.scope -m comment --comment "imds-guard:ID cgino=302" -j REJECT --reject-with tcp-reset`,
      `block -d 168.63.129.16/32 -p tcp -m tcp --dport 32526 -m cgroup --path /system.slice/docker-${id('o')}.scope -m comment --comment "imds-guard:ID cgino=302" -j REJECT --reject-with tcp-reset`,
    ]);
  });

  test('the IPv6 chain covers the IPv6 endpoints only', () => {
    const rules = hostNetRules('ipv6', ENDPOINTS, observed());
    assert.deepEqual(rules.filter((r) => r.purpose === 'block').map((r) => r.endpoint), [V6, V6]);
  });

  test('a container under the parent needs no rule of its own', () => {
    assert.ok(hostNetRules('ipv4', ENDPOINTS, observed()).every((r) => r.cgroup !== UNDER.cgroup));
  });

  test('an exempt or own-rule container whose cgroup inode could not be read gets no rule (it could name a cgroup that is gone)', () => {
    const rules = hostNetRules('ipv4', ENDPOINTS, observed({ inodes: new Map() }));
    assert.deepEqual(rules.map((r) => r.cgroup), ['/docker', '/docker']);
  });

  test('no parent: only the own rules', () => {
    assert.deepEqual(hostNetRules('ipv4', [V4], observed({ parent: null })).map((r) => `${r.purpose} ${r.cgroup}`), [`allow /docker/${id('e')}`, `block /system.slice/docker-${id('o')}.scope`]);
  });

  test('when the host cannot match cgroups at all, the chain is empty', () => {
    assert.deepEqual(hostNetRules('ipv4', ENDPOINTS, observed({ unavailable: 'the host has no cgroup v2 hierarchy' })), []);
  });

  test('a family without endpoints has no rules', () => {
    assert.deepEqual(hostNetRules('ipv6', [V4], observed()), []);
  });

  test('a new inode keeps the rule id and changes only the comment', () => {
    const a = hostNetRules('ipv4', [V4], observed())[1]!;
    const b = hostNetRules('ipv4', [V4], observed({ parent: { path: path('/docker'), inode: 999 } }))[1]!;
    assert.equal(a.id, b.id);
    assert.notDeepEqual(a.args, b.args);
  });
});

describe('bootHostNetRules', () => {
  test('the boot script restores the parent rule alone, per endpoint of the family, with no inode in its comment', () => {
    const rules = bootHostNetRules('ipv4', ENDPOINTS, path('/docker'));
    assert.deepEqual(rules.map((r) => shape(r.args)), [
      '-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m cgroup --path /docker -m comment --comment imds-guard:ID -j REJECT --reject-with tcp-reset',
      '-d 168.63.129.16/32 -p tcp -m tcp --dport 32526 -m cgroup --path /docker -m comment --comment imds-guard:ID -j REJECT --reject-with tcp-reset',
    ]);
    assert.equal(rules[0]!.id, hostNetRules('ipv4', ENDPOINTS, observed())[1]!.id, 'the same rule as the pass writes, so the first pass finds it and records the inode');
  });

  test('no parent, no rules', () => assert.deepEqual(bootHostNetRules('ipv4', ENDPOINTS, null), []));
});

describe('hostContainerFindings', () => {
  test('one finding per host-network container saying how it is covered; one it cannot cover is exposed', () => {
    const findings = hostContainerFindings(observed(), 'warn');
    assert.deepEqual(
      findings.map((f) => `${f.id} ${f.kind} ${f.status} ${f.container}: ${f.message}`),
      [
        'IG-801 host-container info ecs-agent: host-network container ecs-agent: exempt, keeps access (reason of ecs-agent)',
        'IG-801 host-container info node-exporter: host-network container node-exporter: covered by the parent rule (reason of node-exporter)',
        'IG-801 host-container info outside: host-network container outside: covered by a rule of its own (reason of outside)',
        'IG-801 host-container-exposed warn v1only: host-network container v1only is exposed: reason of v1only',
      ],
    );
    assert.deepEqual(findings.map((f) => f.evidence), [[`cgroup /docker/${id('e')}`], [`cgroup /docker/${id('n')}`], [`cgroup /system.slice/docker-${id('o')}.scope`], ['cgroup unknown']]);
  });

  test('an exposed container is a FAIL when notCoverable is fail, for the operator, not drift', () => {
    const f = hostContainerFindings(observed({ containers: [EXPOSED] }), 'fail')[0]!;
    assert.equal(f.status, 'fail');
    assert.equal(needsOperator(f), true);
    assert.equal(isDrift(f), false);
    assert.match(f.remediation ?? '', /bridge network/);
  });

  test('an own-rule container whose cgroup inode could not be read has no rule, so it is exposed', () => {
    const f = hostContainerFindings(observed({ containers: [OWN], inodes: new Map() }), 'warn')[0]!;
    assert.equal(f.kind, 'host-container-exposed');
  });

  test('an exempt container whose cgroup could not be resolved gets no return rule, so the audit must not claim it keeps access', () => {
    for (const obs of [observed({ containers: [EXEMPT], inodes: new Map() }), observed({ containers: [{ ...EXEMPT, cgroup: null }] })]) {
      assert.equal(hostNetRules('ipv4', [V4], obs).filter((r) => r.purpose === 'allow').length, 0, 'no return rule');
      const f = hostContainerFindings(obs, 'warn')[0]!;
      assert.equal(f.status, 'warn');
      assert.doesNotMatch(f.message, /keeps access/);
      assert.match(f.message, /exempt, but .*no return rule/);
    }
  });

  test('when the host cannot match cgroups, the exposure names why', () => {
    const f = hostContainerFindings(observed({ containers: [EXPOSED], unavailable: "iptables or the kernel lacks the cgroup path match" }), 'warn')[0]!;
    assert.equal(f.message, 'host-network container v1only is exposed: iptables or the kernel lacks the cgroup path match');
  });
});
