import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Endpoint } from '../../src/core/endpoint.js';
import { hasDrift } from '../../src/core/findings.js';
import {
  type ProbeContainerFact,
  type ProbeOutcome,
  type ProbeTarget,
  buildProbeReport,
  chooseProbeTargets,
  probeFindings,
  renderProbeText,
  verdictOf,
} from '../../src/core/probe-report.js';

const V4: Endpoint = { family: 'ipv4', address: '169.254.169.254', port: 80 };
const V6: Endpoint = { family: 'ipv6', address: 'fd00:ec2::254', port: 80 };
const ID = (c: string) => c.repeat(64);
const WEB = { id: ID('a'), name: 'web-1', pid: 4242 };
const TARGET: ProbeTarget = { network: 'lab-user', container: WEB, hostNetwork: false, cgroup: null };

function probed(result: 'refused' | 'timeout' | 'connected' | 'error', opts: { endpoint?: Endpoint; code?: string | null; ms?: number; target?: ProbeTarget } = {}): ProbeOutcome {
  const t = opts.target ?? TARGET;
  return { network: t.network, container: t.container, hostNetwork: t.hostNetwork, endpoint: opts.endpoint ?? V4, result, ms: opts.ms ?? 2, code: opts.code ?? null };
}

function container(name: string, networks: string[], extra: Partial<ProbeContainerFact> = {}): ProbeContainerFact {
  return { id: ID(name[0] ?? 'f'), name, pid: 100 + name.length, running: true, networks, cgroup: null, ...extra };
}

describe('chooseProbeTargets: one running container stands for each network', () => {
  test('the first running container by name is chosen, whatever order Docker listed them in', () => {
    const nets = [{ name: 'lab-user', driver: 'bridge' }];
    const cs = [container('zeta', ['lab-user']), container('alpha', ['lab-user'], { running: false }), container('beta', ['lab-user'])];
    const { targets } = chooseProbeTargets(nets, cs);
    assert.deepEqual(targets.map((t) => t.container.name), ['beta']);
    assert.deepEqual(chooseProbeTargets(nets, [...cs].reverse()).targets, targets);
  });

  test('a container on that network alone is preferred to one on several (whose default route proves one network only)', () => {
    const nets = [{ name: 'a', driver: 'bridge' }, { name: 'b', driver: 'bridge' }];
    const { targets } = chooseProbeTargets(nets, [container('multi', ['a', 'b']), container('zonly', ['b'])]);
    assert.deepEqual(targets.map((t) => [t.network, t.container.name]), [['a', 'multi'], ['b', 'zonly']]);
  });

  test('a network with no running container is listed as not probed, and `none` not at all', () => {
    const r = chooseProbeTargets(
      [{ name: 'empty', driver: 'bridge' }, { name: 'none', driver: 'null' }, { name: 'bridge', driver: 'bridge' }],
      [container('c', ['bridge', 'none']), container('stopped', ['empty'], { running: false })],
    );
    assert.deepEqual(r.targets.map((t) => t.network), ['bridge']);
    assert.deepEqual(r.unprobed, [{ network: 'empty', hostNetwork: false, reason: 'no running container' }]);
  });

  test('the host network keeps the container\'s cgroup, so the cgroup rule can be tested', () => {
    const cgroup = `/docker/${ID('h')}`;
    const { targets } = chooseProbeTargets([{ name: 'host', driver: 'host' }], [container('h', ['host'], { cgroup })]);
    assert.deepEqual(targets, [{ network: 'host', container: { id: ID('h'), name: 'h', pid: 101 }, hostNetwork: true, cgroup }]);
  });

  test('a running container without a pid cannot stand for its network', () => {
    const r = chooseProbeTargets([{ name: 'n', driver: 'bridge' }], [container('x', ['n'], { pid: 0 })]);
    assert.equal(r.targets.length, 0);
    assert.equal(r.unprobed.length, 1);
  });
});

describe('verdicts', () => {
  const cases: [string, ProbeOutcome, string][] = [
    ['a connection that opened is an exposure', probed('connected'), 'exposed'],
    ['a refused connection is blocked', probed('refused', { code: 'ECONNREFUSED' }), 'blocked'],
    ['a timeout is blocked', probed('timeout'), 'blocked'],
    ['no route to the endpoint is blocked', probed('error', { code: 'ENETUNREACH' }), 'blocked'],
    ['an ICMP host-unreachable is blocked', probed('error', { code: 'EHOSTUNREACH' }), 'blocked'],
    ['running out of file descriptors proves nothing', probed('error', { code: 'EMFILE' }), 'unknown'],
    ['a target not entered is not probed', { ...probed('refused'), result: 'not-probed', reason: 'process 4242 is gone' }, 'not-probed'],
  ];
  for (const [name, outcome, verdict] of cases) test(name, () => assert.equal(verdictOf(outcome), verdict));
});

describe('findings and text', () => {
  const outcomes: ProbeOutcome[] = [
    probed('refused', { ms: 1.6, code: 'ECONNREFUSED' }),
    probed('connected', { endpoint: V6, ms: 0.4 }),
    { ...probed('refused', { target: { ...TARGET, network: 'bridge' } }), result: 'not-probed', reason: 'permission denied opening /proc/4242/ns/net' },
  ];
  const report = buildProbeReport(outcomes, [{ network: 'empty', hostNetwork: false, reason: 'no running container' }]);

  test('a connected endpoint is a critical FAIL with IG-701, and makes the audit exit non-zero', () => {
    const fail = probeFindings(report).filter((f) => f.status === 'fail');
    assert.deepEqual(fail.map((f) => [f.id, f.kind, f.severity, f.endpoint, f.network]), [['IG-701', 'probe-connected', 'critical', '[fd00:ec2::254]:80', 'lab-user']]);
    assert.equal(hasDrift(probeFindings(report)), true);
  });

  test('a refused endpoint is a PASS whose evidence says how, how fast, from which container and network', () => {
    const pass = probeFindings(report).filter((f) => f.status === 'pass');
    assert.deepEqual(pass.map((f) => [f.id, f.evidence]), [['IG-701', [`refused in 2 ms from container web-1 (aaaaaaaaaaaa) on network lab-user`]]]);
  });

  test('a network that should have been probed but was not is a WARN; one with no running container is INFO', () => {
    const ig702 = probeFindings(report).filter((f) => f.id === 'IG-702');
    assert.deepEqual(ig702.map((f) => [f.status, f.network]), [['warn', 'bridge'], ['info', 'empty']]);
    assert.equal(hasDrift(probeFindings(buildProbeReport([], [{ network: 'empty', hostNetwork: false, reason: 'no running container' }]))), false);
  });

  test('the JSON shape is plain data, networks by name, with a summary by verdict', () => {
    assert.deepEqual(JSON.parse(JSON.stringify(report)), {
      networks: [
        { network: 'bridge', hostNetwork: false, container: WEB, notProbed: null, endpoints: [{ endpoint: '169.254.169.254:80', family: 'ipv4', result: 'not-probed', verdict: 'not-probed', ms: null, code: null, reason: 'permission denied opening /proc/4242/ns/net' }] },
        { network: 'empty', hostNetwork: false, container: null, notProbed: 'no running container', endpoints: [] },
        {
          network: 'lab-user',
          hostNetwork: false,
          container: WEB,
          notProbed: null,
          endpoints: [
            { endpoint: '169.254.169.254:80', family: 'ipv4', result: 'refused', verdict: 'blocked', ms: 1.6, code: 'ECONNREFUSED', reason: null },
            { endpoint: '[fd00:ec2::254]:80', family: 'ipv6', result: 'connected', verdict: 'exposed', ms: 0.4, code: null, reason: null },
          ],
        },
      ],
      summary: { blocked: 1, exposed: 1, 'not-probed': 1, unknown: 0, networksNotProbed: 1 },
    });
  });

  test('the text names every network and endpoint with its verdict', () => {
    assert.equal(
      renderProbeText(report),
      [
        'probe: 1 exposed, 1 blocked, 0 unknown, 1 not probed; 1 network(s) with no running container',
        '[WARN] IG-702 169.254.169.254:80 not probed from network bridge: permission denied opening /proc/4242/ns/net',
        '       evidence: not probed from container web-1 (aaaaaaaaaaaa) on network bridge: permission denied opening /proc/4242/ns/net',
        '[INFO] IG-702 network empty not probed: no running container',
        '[PASS] IG-701 169.254.169.254:80 is not reachable from network lab-user',
        '       evidence: refused in 2 ms from container web-1 (aaaaaaaaaaaa) on network lab-user',
        '[FAIL] IG-701 [fd00:ec2::254]:80 is reachable from network lab-user: a connection opened',
        '       evidence: connected in 0 ms from container web-1 (aaaaaaaaaaaa) on network lab-user',
        '',
      ].join('\n'),
    );
  });

  test('a timeout and an unreachable error read as such in the evidence', () => {
    const r = buildProbeReport([probed('timeout', { ms: 1000 }), probed('error', { endpoint: V6, code: 'ENETUNREACH', ms: 0.1 })], []);
    assert.deepEqual(
      probeFindings(r).map((f) => [f.status, f.evidence[0]]),
      [
        ['pass', 'timed out in 1000 ms from container web-1 (aaaaaaaaaaaa) on network lab-user'],
        ['pass', 'unreachable (ENETUNREACH) in 0 ms from container web-1 (aaaaaaaaaaaa) on network lab-user'],
      ],
    );
  });
});
