import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DOCKER_SETTLE_MS, isBridgeForwardRule, settlingAfter, splitDockerChurn, stillSettling } from '../../src/core/docker-churn.js';
import type { Finding } from '../../src/core/findings.js';

const at = { family: 'ipv4', backend: 'nft', table: 'filter', chain: 'IMDS-GUARD-FWD' } as const;
const f = (kind: Finding['kind'], evidence: string[], over: Partial<Finding> = {}): Finding => ({ ...at, id: 'IG-201', kind, status: 'fail', severity: 'critical', message: kind, evidence, ...over });
const kinds = (xs: readonly Finding[]): string[] => xs.map((x) => x.kind);
const BRIDGE_ACCEPT = '-A FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT';

describe('splitDockerChurn', () => {
  test("Docker's bridge rules above the FORWARD jump: churn, with the unprotected findings they cause", () => {
    const s = splitDockerChurn([f('jump-not-first', [BRIDGE_ACCEPT]), f('foreign-undermining', [BRIDGE_ACCEPT]), f('unprotected', [], { id: 'IG-110' })]);
    assert.deepEqual(kinds(s.churn), ['jump-not-first', 'foreign-undermining', 'unprotected']);
    assert.deepEqual(s.drift, []);
  });

  test('a foreign ACCEPT for the endpoint among them keeps it all drift', () => {
    const foreign = '-A FORWARD -d 169.254.0.0/16 -j ACCEPT';
    const s = splitDockerChurn([f('jump-not-first', [foreign, BRIDGE_ACCEPT]), f('foreign-undermining', [foreign]), f('foreign-undermining', [BRIDGE_ACCEPT]), f('unprotected', [])]);
    assert.deepEqual(s.churn, []);
  });

  for (const [what, evidence] of [
    ['only its RETURN', ['-A DOCKER-USER -j RETURN']],
    ['nothing yet', ['-N DOCKER-USER']],
  ] as const) {
    test(`DOCKER-USER as dockerd just made it (${what}), without our jump: churn`, () => {
      const s = splitDockerChurn([f('jump-missing', [...evidence]), f('unprotected', [], { id: 'IG-110' })]);
      assert.deepEqual(kinds(s.churn), ['jump-missing', 'unprotected']);
      assert.deepEqual(s.drift, []);
    });
  }

  test('our DOCKER-USER jump gone from a DOCKER-USER holding other rules: drift (someone deleted it)', () => {
    const s = splitDockerChurn([f('jump-missing', ['-A DOCKER-USER -i eth0 -j DROP', '-A DOCKER-USER -j RETURN'])]);
    assert.deepEqual(kinds(s.drift), ['jump-missing']);
  });

  test('the FORWARD jump deleted (no evidence) beside a fresh DOCKER-USER: all drift', () => {
    const s = splitDockerChurn([f('jump-missing', []), f('jump-missing', ['-A DOCKER-USER -j RETURN']), f('unprotected', [])]);
    assert.deepEqual(s.churn, []);
    assert.equal(s.drift.length, 3);
  });

  test('the nat chain and the other family are not touched', () => {
    const s = splitDockerChurn([f('jump-missing', ['-A DOCKER-USER -j RETURN']), f('unprotected', [], { table: 'nat', chain: 'IMDS-GUARD' }), f('unprotected', [], { family: 'ipv6' })]);
    assert.deepEqual(kinds(s.churn), ['jump-missing']);
    assert.equal(s.drift.length, 2);
  });
});

describe('isBridgeForwardRule', () => {
  for (const [line, expected] of [
    [BRIDGE_ACCEPT, true],
    ['-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', true],
    ['-A FORWARD -o docker0 -j DOCKER', true],
    ['-A FORWARD -i docker0 -o docker1 -j ACCEPT', false],
    ['-A FORWARD -d 169.254.169.254/32 -i docker0 -j ACCEPT', false],
    ['-A FORWARD -j DOCKER-INGRESS', false],
    ['-A DOCKER-USER -i docker0 -j ACCEPT', false],
  ] as const) {
    test(`${line}: ${expected}`, () => assert.equal(isBridgeForwardRule(line), expected));
  }
});

describe("how long Docker's rules above its -j DOCKER-USER are left for Docker", () => {
  test('a rule is fresh when first seen and for DOCKER_SETTLE_MS after, then not; a rule gone is forgotten', () => {
    const a = '-A FORWARD -i br-a ! -o br-a -j ACCEPT';
    const b = '-A FORWARD -i br-b ! -o br-b -j ACCEPT';
    assert.equal(stillSettling(new Map(), 1_000)(a), true, 'never seen: fresh');
    const t1 = settlingAfter(new Map(), [a], 1_000);
    const t2 = settlingAfter(t1, [a, b], 2_000);
    assert.deepEqual([...t2], [[a, 1_000], [b, 2_000]], 'the first sighting is kept');
    assert.equal(stillSettling(t2, 1_000 + DOCKER_SETTLE_MS - 1)(a), true);
    assert.equal(stillSettling(t2, 1_000 + DOCKER_SETTLE_MS)(a), false);
    assert.equal(stillSettling(t2, 1_000 + DOCKER_SETTLE_MS)(b), true);
    assert.deepEqual([...settlingAfter(t2, [b], 3_000)], [[b, 2_000]]);
    assert.equal(settlingAfter(t2, [], 3_000).size, 0);
  });
});
