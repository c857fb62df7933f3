import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { renderBootScript } from '../../src/core/boot-script.js';
import { toCgroupPath } from '../../src/core/cgroup.js';
import { compareChain } from '../../src/core/chain-compare.js';
import type { Config } from '../../src/core/config.js';
import type { DesiredFamily } from '../../src/core/desired.js';
import type { Family } from '../../src/core/family.js';
import { type Finding, isDrift, needsOperator } from '../../src/core/findings.js';
import { type HostNetObservation, hostNetRules } from '../../src/core/host-network.js';
import { type FamilyObservation, type Observation, type Plan, isConverged, planReconcile } from '../../src/core/plan.js';
import { type SavedTable, type TableName, parseListing, parseSave } from '../../src/core/saved-table.js';
import { config, desiredOf, freshSave, jumpLine, observation, policyOf, protectedLines, protectedSave, readable, ruleLines, section } from './support.js';

const JUMP_COMMENT = '-m comment --comment "imds-guard: metadata endpoint protection"';
const NAT_JUMP = `-A PREROUTING ${JUMP_COMMENT} -j IMDS-GUARD`;
const FWD_JUMP = `-A FORWARD ${JUMP_COMMENT} -j IMDS-GUARD-FWD`;
const DU_JUMP = `-A DOCKER-USER ${JUMP_COMMENT} -j IMDS-GUARD-FWD`;

// Two IPv4 endpoints (so order matters) and none for IPv6 (whose fresh tables then need nothing).
const C = config({ endpoints: ['169.254.169.254:80', '169.254.169.254:8080'] });
const WANT = desiredOf(C);
const NAT = WANT.ipv4.chains.find((c) => c.chain === 'IMDS-GUARD')!;
const FWD = WANT.ipv4.chains.find((c) => c.chain === 'IMDS-GUARD-FWD')!;
const [R80, R8080] = ruleLines(NAT) as [string, string];

const save = (nat: readonly string[], filter: readonly string[] = protectedLines(WANT.ipv4, 'filter'), raw: readonly string[] = []): ReadonlyMap<TableName, SavedTable> =>
  parseSave(section('nat', nat) + section('filter', filter) + section('raw', raw));

function planOn(ipv4: FamilyObservation, opts: { want?: Record<Family, DesiredFamily>; c?: Config; ipv6?: FamilyObservation; over?: Partial<Observation> } = {}): Plan {
  return planReconcile(opts.want ?? WANT, observation({ ipv4, ipv6: opts.ipv6 ?? readable(freshSave()) }, opts.over ?? {}), policyOf(opts.c ?? C));
}

const failing = (p: Plan): string[] => p.findings.filter((f) => f.status === 'fail').map((f) => `${f.id} ${f.kind}${f.chain === undefined ? '' : ` ${f.chain}`}`);
const written = (p: Plan): string[] => p.transactions.map((t) => `${t.family} ${t.backend} ${t.table}${t.protects ? '' : ' (removal)'}`);
const only = (p: Plan, kind: Finding['kind']): Finding => {
  const all = p.findings.filter((f) => f.kind === kind);
  assert.equal(all.length, 1, `one ${kind} finding: ${JSON.stringify(p.findings.map((f) => f.kind))}`);
  return all[0]!;
};

/** The whole nat payload that rewrites our chain, for a table where only the chain is wrong. */
const NAT_REWRITE = `*nat\n:IMDS-GUARD - [0:0]\n${R80}\n${R8080}\nCOMMIT\n`;
const NAT_JUMP_MOVE = `*nat\n-D PREROUTING ${JUMP_COMMENT} -j IMDS-GUARD\n-I PREROUTING 1 ${JUMP_COMMENT} -j IMDS-GUARD\nCOMMIT\n`;

describe('planReconcile on a converged host', () => {
  test('writes nothing, and says every endpoint is refused in nat and in the backstop', () => {
    const p = planOn(readable(protectedSave(WANT.ipv4)));
    assert.deepEqual(p.transactions, []);
    assert.equal(isConverged(p), true);
    assert.deepEqual(failing(p), []);
    assert.deepEqual(
      p.findings.filter((f) => f.status === 'pass' && f.endpoint !== undefined).map((f) => `${f.id} ${f.endpoint}`),
      ['IG-101 169.254.169.254:80', 'IG-101 169.254.169.254:8080', 'IG-110 169.254.169.254:80', 'IG-110 169.254.169.254:8080'],
    );
    assert.deepEqual(p.desired.map((d) => d.family), ['ipv4'], 'the IPv6 family has no endpoints, so nothing of ours is there');
  });

  test('a fresh host gets exactly the golden payloads, one transaction per table and family, each protecting', () => {
    const c = config();
    const p = planReconcile(desiredOf(c), observation({ ipv4: readable(freshSave()), ipv6: readable(freshSave()) }), policyOf(c));
    const golden = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'golden', 'default.restore'), 'utf8');
    assert.equal(p.transactions.map((t) => `# ${t.family} ${t.table}\n${t.payload}`).join(''), golden);
    assert.ok(p.transactions.every((t) => t.backend === 'nft' && t.protects));
  });
});

describe('planReconcile finds drift in the nat chain and its jump, and repairs it in one transaction', () => {
  interface Case {
    readonly what: string;
    readonly nat: readonly string[];
    readonly fails: readonly string[];
    /** The nat payload, exactly; the filter table is converged in every case. */
    readonly payload: string;
  }
  const cases: readonly Case[] = [
    {
      what: 'the chain flushed: every rule missing, the chain rewritten, the jump left alone',
      nat: [':IMDS-GUARD - [0:0]', NAT_JUMP],
      fails: ['IG-101 rule-missing IMDS-GUARD', 'IG-101 rule-missing IMDS-GUARD'],
      payload: NAT_REWRITE,
    },
    {
      what: 'the chain deleted with its jump: declared, filled and jumped to',
      nat: [],
      fails: ['IG-102 chain-missing IMDS-GUARD', 'IG-201 jump-missing IMDS-GUARD', 'IG-101 rule-missing IMDS-GUARD', 'IG-101 rule-missing IMDS-GUARD'],
      payload: `*nat\n:IMDS-GUARD - [0:0]\n${R80}\n${R8080}\n-I PREROUTING 1 ${JUMP_COMMENT} -j IMDS-GUARD\nCOMMIT\n`,
    },
    {
      what: 'the jump deleted: only the jump inserted, the chain untouched',
      nat: [':IMDS-GUARD - [0:0]', R80, R8080],
      fails: ['IG-201 jump-missing IMDS-GUARD', 'IG-101 unprotected IMDS-GUARD', 'IG-101 unprotected IMDS-GUARD'],
      payload: `*nat\n-I PREROUTING 1 ${JUMP_COMMENT} -j IMDS-GUARD\nCOMMIT\n`,
    },
    {
      what: 'a rule altered under our comment (another port to redirect to)',
      nat: [':IMDS-GUARD - [0:0]', NAT_JUMP, R80.replace('--to-ports 1', '--to-ports 2'), R8080],
      fails: ['IG-103 rule-altered IMDS-GUARD', 'IG-101 rule-missing IMDS-GUARD'],
      payload: NAT_REWRITE,
    },
    {
      what: 'the rules reordered',
      nat: [':IMDS-GUARD - [0:0]', NAT_JUMP, R8080, R80],
      fails: ['IG-105 rule-reordered IMDS-GUARD'],
      payload: NAT_REWRITE,
    },
    {
      what: 'a foreign rule put in our chain',
      nat: [':IMDS-GUARD - [0:0]', NAT_JUMP, '-A IMDS-GUARD -s 172.17.0.5/32 -j ACCEPT', R80, R8080],
      fails: ['IG-104 rule-unknown IMDS-GUARD'],
      payload: NAT_REWRITE,
    },
    {
      what: 'a second copy of one of our rules',
      nat: [':IMDS-GUARD - [0:0]', NAT_JUMP, R80, R8080, R80],
      fails: ['IG-104 rule-unknown IMDS-GUARD'],
      payload: NAT_REWRITE,
    },
    {
      what: 'a duplicate jump: both deleted by their text, one put back on top',
      nat: [':IMDS-GUARD - [0:0]', NAT_JUMP, NAT_JUMP, R80, R8080],
      fails: ['IG-202 jump-duplicate IMDS-GUARD'],
      payload: `*nat\n-D PREROUTING ${JUMP_COMMENT} -j IMDS-GUARD\n-D PREROUTING ${JUMP_COMMENT} -j IMDS-GUARD\n-I PREROUTING 1 ${JUMP_COMMENT} -j IMDS-GUARD\nCOMMIT\n`,
    },
    {
      what: 'the jump altered (its comment changed): deleted by its exact text, the canonical one inserted',
      nat: [':IMDS-GUARD - [0:0]', '-A PREROUTING -m comment --comment "a \\"b\\" c" -j IMDS-GUARD', R80, R8080],
      fails: ['IG-202 jump-altered IMDS-GUARD', 'IG-101 unprotected IMDS-GUARD', 'IG-101 unprotected IMDS-GUARD'],
      payload: `*nat\n-D PREROUTING -m comment --comment "a \\"b\\" c" -j IMDS-GUARD\n-I PREROUTING 1 ${JUMP_COMMENT} -j IMDS-GUARD\nCOMMIT\n`,
    },
    {
      what: 'an ACCEPT for the endpoint above the jump: the jump moved back on top',
      nat: [':IMDS-GUARD - [0:0]', '-A PREROUTING -d 169.254.0.0/16 -j ACCEPT', NAT_JUMP, R80, R8080],
      fails: ['IG-201 jump-not-first IMDS-GUARD', 'IG-301 foreign-undermining IMDS-GUARD', 'IG-101 unprotected IMDS-GUARD', 'IG-101 unprotected IMDS-GUARD'],
      payload: NAT_JUMP_MOVE,
    },
    {
      what: 'a DNAT of the link-local range above the jump',
      nat: [':IMDS-GUARD - [0:0]', '-A PREROUTING -d 169.254.0.0/16 -p tcp -j DNAT --to-destination 10.9.9.9', NAT_JUMP, R80, R8080],
      fails: ['IG-201 jump-not-first IMDS-GUARD', 'IG-301 foreign-undermining IMDS-GUARD', 'IG-101 unprotected IMDS-GUARD', 'IG-101 unprotected IMDS-GUARD'],
      payload: NAT_JUMP_MOVE,
    },
    {
      what: "the seed recipe's DNAT of exactly the endpoint above the jump: moved below ours, and only warned about",
      nat: [':IMDS-GUARD - [0:0]', '-A PREROUTING -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 1.1.1.1', NAT_JUMP, R80, R8080],
      fails: ['IG-201 jump-not-first IMDS-GUARD', 'IG-101 unprotected IMDS-GUARD', 'IG-101 unprotected IMDS-GUARD'],
      payload: NAT_JUMP_MOVE,
    },
  ];
  for (const c of cases) {
    test(c.what, () => {
      const p = planOn(readable(save(c.nat)));
      assert.deepEqual(failing(p), c.fails);
      assert.deepEqual(written(p), ['ipv4 nft nat']);
      assert.equal(p.transactions[0]!.payload, c.payload);
      assert.ok(p.findings.filter((f) => f.status === 'fail').every(isDrift), 'all of it is drift a pass repairs');
    });
  }

  test('a foreign rule above the jump is reported with a remediation that deletes exactly it, for this family and backend', () => {
    const p = planOn(readable(save([':IMDS-GUARD - [0:0]', '-A PREROUTING -d 169.254.0.0/16 -j ACCEPT', NAT_JUMP, R80, R8080])));
    const f = only(p, 'foreign-undermining');
    assert.deepEqual(f.evidence, ['-A PREROUTING -d 169.254.0.0/16 -j ACCEPT']);
    assert.equal(f.remediation, 'remove it if it is not wanted: iptables-nft -t nat -D PREROUTING -d 169.254.0.0/16 -j ACCEPT');
  });

  test("the seed recipe's rule gets a seed-duplicate warning whose remediation deletes it", () => {
    const p = planOn(readable(save([':IMDS-GUARD - [0:0]', NAT_JUMP, '-A PREROUTING -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 1.1.1.1', R80, R8080])));
    assert.deepEqual(p.transactions, [], 'below our jump it takes nothing: no transaction');
    const f = only(p, 'seed-duplicate');
    assert.equal(f.status, 'warn');
    assert.equal(f.remediation, 'iptables-nft -t nat -D PREROUTING -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 1.1.1.1');
  });
});

describe('rules above our jumps that cannot take metadata traffic are left where they are', () => {
  test("Swarm's `-m addrtype --dst-type LOCAL -j DOCKER-INGRESS` above the nat jump is harmless: nothing written", () => {
    const p = planOn(readable(save(protectedLines(WANT.ipv4, 'nat', { declare: [':DOCKER-INGRESS - [0:0]'], above: ['-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS'] }))));
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(failing(p), []);
    const jump = p.findings.find((f) => f.id === 'IG-201' && f.chain === 'IMDS-GUARD')!;
    assert.equal(jump.message, 'the IMDS-GUARD jump sees all metadata traffic first in PREROUTING (1 harmless rule(s) above it)');
  });

  const dockerUser = (rules: readonly string[]): string[] => protectedLines(WANT.ipv4, 'filter', { declare: [':DOCKER-USER - [0:0]'], above: ['-A FORWARD -j DOCKER-USER'], below: rules });

  test("Docker's `-j DOCKER-USER` above the FORWARD jump is harmless while DOCKER-USER holds our jump on top", () => {
    const p = planOn(readable(save(protectedLines(WANT.ipv4, 'nat'), dockerUser([DU_JUMP, '-A DOCKER-USER -j RETURN']))));
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(failing(p), []);
  });

  test('a DOCKER-USER holding an ACCEPT for the endpoint above our jump there: our jump moved back to the top of DOCKER-USER, FORWARD left alone', () => {
    const p = planOn(readable(save(protectedLines(WANT.ipv4, 'nat'), dockerUser(['-A DOCKER-USER -d 169.254.169.254/32 -j ACCEPT', DU_JUMP, '-A DOCKER-USER -j RETURN']))));
    assert.deepEqual(failing(p), ['IG-201 jump-not-first IMDS-GUARD-FWD', 'IG-301 foreign-undermining IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD']);
    assert.deepEqual(written(p), ['ipv4 nft filter']);
    assert.equal(p.transactions[0]!.payload, `*filter\n-D DOCKER-USER ${JUMP_COMMENT} -j IMDS-GUARD-FWD\n-I DOCKER-USER 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD\nCOMMIT\n`);
    assert.equal(only(p, 'foreign-undermining').remediation, 'remove it if it is not wanted: iptables-nft -t filter -D DOCKER-USER -d 169.254.169.254/32 -j ACCEPT');
    assert.equal(only(p, 'jump-not-first').message, 'rules above the IMDS-GUARD-FWD jump in DOCKER-USER can take metadata traffic before it');
  });

  test('an ACCEPT above the jump that matches only an allowed interface is harmless', () => {
    const c = config({ endpoints: ['169.254.169.254:80'], allow: ['vmbr0'] });
    const want = desiredOf(c);
    const p = planOn(readable(parseSave(section('nat', protectedLines(want.ipv4, 'nat', { above: ['-A PREROUTING -i vmbr0 -j ACCEPT'] })) + section('filter', protectedLines(want.ipv4, 'filter')))), { want, c });
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(failing(p), []);
    assert.ok(p.findings.some((f) => f.kind === 'protected' && f.interface === 'vmbr0' && f.status === 'info'), 'the allowed interface is listed as keeping access');
  });
});

/**
 * Docker 20.10's filter table (test/fixtures/docker-20.10-swarm.nft.save) with ours put
 * in: Docker's `-j DOCKER-USER` first in FORWARD, then its bridges' rules, ACCEPTs among
 * them; `forward` is where our FORWARD jump sits, `dockerUser` what DOCKER-USER holds.
 */
function dockerFilter(opts: { forward?: 'top' | 'bottom' | 'none'; dockerUser?: readonly string[]; forwardTop?: readonly string[] } = {}): string[] {
  const fixture = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'docker-20.10-swarm.nft.save'), 'utf8');
  const filter = fixture.slice(fixture.indexOf('*filter\n') + 8, fixture.indexOf('\nCOMMIT', fixture.indexOf('*filter\n'))).split('\n');
  const forward = filter.filter((l) => l.startsWith('-A FORWARD '));
  const ours = opts.forward ?? 'bottom';
  return [
    ...filter.filter((l) => l.startsWith(':') && !/^:(INPUT|FORWARD|OUTPUT) /.test(l)),
    ':IMDS-GUARD-FWD - [0:0]',
    ...(ours === 'top' ? [FWD_JUMP] : []),
    ...(opts.forwardTop ?? []),
    ...forward,
    ...(ours === 'bottom' ? [FWD_JUMP] : []),
    ...(opts.dockerUser ?? [DU_JUMP, '-A DOCKER-USER -j RETURN']),
    ...filter.filter((l) => l.startsWith('-A ') && !l.startsWith('-A FORWARD ') && !l.startsWith('-A DOCKER-USER ')),
    ...ruleLines(FWD),
  ];
}

describe('the backstop on a Docker host: our jump at the top of DOCKER-USER, which Docker keeps first in FORWARD', () => {
  const onDocker = (filter: readonly string[]): Plan => planOn(readable(save(protectedLines(WANT.ipv4, 'nat'), filter)));
  const backstop = (p: Plan): Finding[] => p.findings.filter((f) => f.table === 'filter' && f.chain === 'IMDS-GUARD-FWD');

  test("Docker 20.10's layout, our FORWARD jump below every one of Docker's bridge ACCEPTs, ours on top of DOCKER-USER: protected, nothing written", () => {
    const p = onDocker(dockerFilter());
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(failing(p), []);
    assert.deepEqual(
      backstop(p).filter((f) => f.status === 'pass').map((f) => `${f.id} ${f.kind} ${f.evidence.join(' | ')}`),
      [`IG-201 protected ${FWD_JUMP}`, `IG-201 protected ${DU_JUMP}`, `IG-110 protected ${ruleLines(FWD)[0]}`, `IG-110 protected ${ruleLines(FWD)[1]}`],
    );
    assert.deepEqual(backstop(p).filter((f) => f.id === 'IG-201').map((f) => f.message), [
      "the IMDS-GUARD-FWD jump is in FORWARD below Docker's -j DOCKER-USER, which comes first: the jump at the top of DOCKER-USER decides (15 rule(s) above this one)",
      'the IMDS-GUARD-FWD jump sees all metadata traffic first in DOCKER-USER, which FORWARD jumps to first',
    ]);
  });

  test('the same with our FORWARD jump on top (as the boot script leaves it): protected, nothing written', () => {
    const p = onDocker(dockerFilter({ forward: 'top' }));
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(failing(p), []);
  });

  test('the cheap read of the same (FORWARD, DOCKER-USER and our chain listed, none of the chains Docker jumps to below DOCKER-USER): converged too', () => {
    const full = parseSave(section('filter', dockerFilter()));
    const filter = parseListing('filter', ['FORWARD', 'IMDS-GUARD-FWD', 'OUTPUT', 'DOCKER-USER'].map((c) => [c, [`-N ${c}`, ...(full.get('filter')!.lines.get(c) ?? []).map((l) => `-A ${c} ${l}`)].join('\n')] as const));
    const p = planOn(readable(new Map([...save(protectedLines(WANT.ipv4, 'nat')), ['filter', filter]])));
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(failing(p), []);
  });

  test('DOCKER-USER as Docker just made it (only its RETURN): our jump inserted at its top, the FORWARD jump left where it is', () => {
    const p = onDocker(dockerFilter({ dockerUser: ['-A DOCKER-USER -j RETURN'] }));
    assert.deepEqual(failing(p), ['IG-201 jump-missing IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD']);
    const f = only(p, 'jump-missing');
    assert.deepEqual({ message: f.message, severity: f.severity, evidence: f.evidence }, { message: 'DOCKER-USER has no jump to IMDS-GUARD-FWD', severity: 'critical', evidence: ['-A DOCKER-USER -j RETURN'] });
    assert.deepEqual(written(p), ['ipv4 nft filter']);
    assert.equal(p.transactions[0]!.payload, `*filter\n-I DOCKER-USER 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD\nCOMMIT\n`);
  });

  test('our DOCKER-USER rule deleted while the FORWARD jump is on top: still protected, but drift (medium), and put back', () => {
    const p = onDocker(dockerFilter({ forward: 'top', dockerUser: ['-A DOCKER-USER -j RETURN'] }));
    assert.deepEqual(failing(p), ['IG-201 jump-missing IMDS-GUARD-FWD']);
    assert.equal(only(p, 'jump-missing').severity, 'medium');
    assert.ok(isDrift(only(p, 'jump-missing')));
    assert.equal(p.transactions[0]!.payload, `*filter\n-I DOCKER-USER 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD\nCOMMIT\n`);
  });

  test('our DOCKER-USER rule altered: deleted by its text, the canonical one inserted at the top', () => {
    const altered = '-A DOCKER-USER -m comment --comment "not ours" -j IMDS-GUARD-FWD';
    const p = onDocker(dockerFilter({ dockerUser: [altered, '-A DOCKER-USER -j RETURN'] }));
    assert.deepEqual(failing(p), ['IG-202 jump-altered IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD']);
    assert.equal(p.transactions[0]!.payload, `*filter\n-D DOCKER-USER -m comment --comment "not ours" -j IMDS-GUARD-FWD\n-I DOCKER-USER 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD\nCOMMIT\n`);
  });

  test('a RETURN above ours in DOCKER-USER sends the traffic back to FORWARD, to Docker\'s ACCEPTs: not first, moved back on top', () => {
    const p = onDocker(dockerFilter({ dockerUser: ['-A DOCKER-USER -i eth0 -j RETURN', DU_JUMP, '-A DOCKER-USER -j RETURN'] }));
    assert.deepEqual(failing(p), ['IG-201 jump-not-first IMDS-GUARD-FWD', 'IG-301 foreign-undermining IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD']);
    assert.equal(p.transactions[0]!.payload, `*filter\n-D DOCKER-USER ${JUMP_COMMENT} -j IMDS-GUARD-FWD\n-I DOCKER-USER 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD\nCOMMIT\n`);
  });

  test("a user's DROP above ours in DOCKER-USER only blocks: nothing written", () => {
    const p = onDocker(dockerFilter({ dockerUser: ['-A DOCKER-USER -i eth0 ! -s 192.168.1.0/24 -j DROP', DU_JUMP, '-A DOCKER-USER -j RETURN'] }));
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(failing(p), []);
  });

  test("Docker's -j DOCKER-USER not first, an ACCEPT for the endpoint above it: drift, the FORWARD jump moved back to the top", () => {
    const accept = '-A FORWARD -d 169.254.0.0/16 -j ACCEPT';
    const p = onDocker(dockerFilter({ forwardTop: [accept] }));
    assert.deepEqual(failing(p).slice(0, 2), ['IG-201 jump-not-first IMDS-GUARD-FWD', 'IG-301 foreign-undermining IMDS-GUARD-FWD']);
    assert.ok(failing(p).includes('IG-110 unprotected IMDS-GUARD-FWD'));
    const notFirst = only(p, 'jump-not-first');
    assert.equal(notFirst.message, 'rules above the IMDS-GUARD-FWD jump in FORWARD can take metadata traffic before it');
    assert.equal(notFirst.evidence[0], accept);
    assert.ok(notFirst.evidence.includes('-A FORWARD -i docker0 ! -o docker0 -j ACCEPT'), "Docker's bridge ACCEPTs are above the jump too");
    assert.ok(!notFirst.evidence.includes('-A FORWARD -j DOCKER-USER'), 'DOCKER-USER sends the traffic to our chain: harmless');
    assert.equal(p.transactions[0]!.payload, `*filter\n-D FORWARD ${JUMP_COMMENT} -j IMDS-GUARD-FWD\n-I FORWARD 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD\nCOMMIT\n`);
  });

  test("Docker's bridge rules above its -j DOCKER-USER (a network create half done): the FORWARD jump decides, and is moved", () => {
    const p = onDocker(dockerFilter({ forwardTop: ['-A FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT'] }));
    assert.ok(failing(p).includes('IG-201 jump-not-first IMDS-GUARD-FWD'));
    assert.equal(p.transactions[0]!.payload, `*filter\n-D FORWARD ${JUMP_COMMENT} -j IMDS-GUARD-FWD\n-I FORWARD 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD\nCOMMIT\n`);
  });

  test("the same seen by the agent while the rules are fresh: left for Docker to finish its network create, nothing written, not protected meanwhile", () => {
    const bridge = ['-A FORWARD -o br-0123456789ab -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', '-A FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT'];
    const asked: string[] = [];
    const p = planReconcile(WANT, observation({ ipv4: readable(save(protectedLines(WANT.ipv4, 'nat'), dockerFilter({ forwardTop: bridge }))), ipv6: readable(freshSave()) }), policyOf(C), undefined, (line) => (asked.push(line), true));
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(p.awaitingDocker, bridge);
    assert.deepEqual(asked, bridge);
    assert.deepEqual(failing(p), ['IG-201 jump-not-first IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD']);
    assert.match(only(p, 'jump-not-first').message, /^Docker is setting up a network: rules for its bridges sit above its -j DOCKER-USER in FORWARD/);
    assert.deepEqual(only(p, 'jump-not-first').evidence, bridge);
    assert.equal(isConverged(p), true, 'nothing to write while Docker finishes');
  });

  test('once they are no longer fresh, or when anything else is above Docker\'s jump, or our DOCKER-USER jump is not in place, the FORWARD jump is moved', () => {
    const bridge = '-A FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT';
    const plan = (filter: readonly string[], fresh: boolean): Plan => planReconcile(WANT, observation({ ipv4: readable(save(protectedLines(WANT.ipv4, 'nat'), filter)), ipv6: readable(freshSave()) }), policyOf(C), undefined, () => fresh);
    const moved = (p: Plan): boolean => p.transactions.length === 1 && p.transactions[0]!.payload.includes('-I FORWARD 1 ');
    assert.ok(moved(plan(dockerFilter({ forwardTop: [bridge] }), false)), 'stale');
    const foreign = plan(dockerFilter({ forwardTop: [bridge, '-A FORWARD -d 169.254.0.0/16 -j ACCEPT'] }), true);
    assert.ok(moved(foreign), 'a foreign ACCEPT beside them');
    assert.deepEqual(foreign.awaitingDocker, []);
    // Without swarm: its `-j DOCKER-INGRESS` (an ACCEPT by source port) can take the traffic, so a swarm host does not wait there.
    const noSwarm = dockerFilter({ forwardTop: [bridge] }).filter((l) => l !== '-A FORWARD -j DOCKER-INGRESS');
    const moving = plan(noSwarm.filter((l) => l !== '-A FORWARD -j DOCKER-USER'), true);
    assert.deepEqual(moving.transactions, [], 'Docker deletes its jump before it inserts it on top: in between FORWARD has none');
    assert.ok(moving.awaitingDocker.includes(bridge) && moving.awaitingDocker.includes('-A FORWARD -i docker0 ! -o docker0 -j ACCEPT'));
    assert.ok(moved(plan(noSwarm.filter((l) => l !== '-A FORWARD -j DOCKER-USER'), false)), 'a DOCKER-USER jump gone for good');
    assert.ok(moved(plan(dockerFilter({ forwardTop: [bridge] }).filter((l) => l !== '-A FORWARD -j DOCKER-USER'), true)), 'with swarm');
    const noOurs = plan(dockerFilter({ forwardTop: [bridge], dockerUser: ['-A DOCKER-USER -j RETURN'] }), true);
    assert.equal(noOurs.transactions[0]!.payload, `*filter\n-D FORWARD ${JUMP_COMMENT} -j IMDS-GUARD-FWD\n-I FORWARD 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD\n-I DOCKER-USER 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD\nCOMMIT\n`);
  });

  test('a conditional jump to DOCKER-USER is not Docker\'s: it does not send all the traffic there, so the FORWARD jump decides', () => {
    const filter = dockerFilter().map((l) => (l === '-A FORWARD -j DOCKER-USER' ? '-A FORWARD -i eth0 -j DOCKER-USER' : l));
    const p = onDocker(filter);
    assert.ok(failing(p).includes('IG-201 jump-not-first IMDS-GUARD-FWD'));
    assert.match(p.transactions[0]!.payload, /-I FORWARD 1 /);
  });

  test("the user deleted Docker's -j DOCKER-USER and our FORWARD jump is on top: protected; our DOCKER-USER rule is kept", () => {
    const p = onDocker(dockerFilter({ forward: 'top' }).filter((l) => l !== '-A FORWARD -j DOCKER-USER'));
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(failing(p), []);
    assert.match(p.findings.find((f) => f.id === 'IG-201' && f.evidence[0] === DU_JUMP)!.message, /FORWARD does not send all of it there first, so the FORWARD jump decides/);
  });

  test('a fresh Docker host gets our jump in FORWARD and at the top of DOCKER-USER, in one filter transaction; Docker\'s rules are not named', () => {
    const fresh = dockerFilter({ forward: 'none', dockerUser: ['-A DOCKER-USER -j RETURN'] }).filter((l) => !l.includes('IMDS-GUARD-FWD'));
    const p = onDocker(fresh);
    assert.deepEqual(written(p), ['ipv4 nft filter']);
    assert.equal(p.transactions[0]!.payload, ['*filter', ':IMDS-GUARD-FWD - [0:0]', ...ruleLines(FWD), `-I FORWARD 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD`, `-I DOCKER-USER 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD`, 'COMMIT', ''].join('\n'));
  });

  test('the boot script keeps the FORWARD jump only: at boot DOCKER-USER does not exist yet', () => {
    assert.doesNotMatch(renderBootScript('nft', [WANT.ipv4]), /DOCKER-USER/);
  });
});

describe('planReconcile fails closed on what it cannot read', () => {
  test('an unreadable table of a family the host has is a FAIL (table-unreadable), never an info, and nothing is written for it', () => {
    const p = planOn({ present: true, ours: { ok: false, why: 'iptables-nft-save failed (exit 1): Could not fetch rule set generation id' }, other: null });
    const f = only(p, 'table-unreadable');
    assert.deepEqual({ id: f.id, status: f.status, family: f.family, backend: f.backend, evidence: f.evidence }, { id: 'IG-501', status: 'fail', family: 'ipv4', backend: 'nft', evidence: ['iptables-nft-save failed (exit 1): Could not fetch rule set generation id'] });
    assert.equal(needsOperator(f), true, 'apply cannot repair it');
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(p.desired, [], 'nothing of this family is known to be in place, so the boot script does not restore it either');
  });

  test('a family the host does not have is an info line, and nothing is written for it', () => {
    const c = config();
    const p = planReconcile(desiredOf(c), observation({ ipv4: readable(protectedSave(desiredOf(c).ipv4)), ipv6: { present: false, ours: { ok: false, why: 'no ipv6' }, other: null } }), policyOf(c));
    const f = only(p, 'family-unavailable');
    assert.deepEqual({ status: f.status, family: f.family }, { status: 'info', family: 'ipv6' });
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(failing(p), []);
  });
});

describe('planReconcile and the other backend', () => {
  test('our chains left in the backend Docker does not use are a finding and get a removal transaction there', () => {
    const p = planOn(readable(protectedSave(WANT.ipv4), protectedSave(WANT.ipv4)));
    assert.deepEqual(failing(p), ['IG-303 other-backend', 'IG-303 other-backend']);
    const nat = p.findings.find((f) => f.kind === 'other-backend' && f.table === 'nat')!;
    assert.deepEqual({ backend: nat.backend, evidence: nat.evidence }, { backend: 'legacy', evidence: [NAT_JUMP] });
    assert.deepEqual(written(p), ['ipv4 legacy nat (removal)', 'ipv4 legacy filter (removal)']);
    assert.equal(p.transactions[0]!.payload, `*nat\n-D PREROUTING ${JUMP_COMMENT} -j IMDS-GUARD\n:IMDS-GUARD - [0:0]\n-X IMDS-GUARD\nCOMMIT\n`);
    assert.equal(p.transactions[1]!.payload, `*filter\n-D FORWARD ${JUMP_COMMENT} -j IMDS-GUARD-FWD\n:IMDS-GUARD-FWD - [0:0]\n-X IMDS-GUARD-FWD\nCOMMIT\n`);
  });

  test('a DNAT for the endpoint in the other backend\'s nat PREROUTING is other-backend-undermining, for the operator', () => {
    const other = parseSave(section('nat', ['-A PREROUTING -d 169.254.169.254/32 -p tcp -j DNAT --to-destination 10.1.1.1']));
    const p = planOn(readable(protectedSave(WANT.ipv4), other));
    const f = only(p, 'other-backend-undermining');
    assert.deepEqual({ id: f.id, status: f.status, backend: f.backend, evidence: f.evidence }, { id: 'IG-304', status: 'fail', backend: 'legacy', evidence: ['-A PREROUTING -d 169.254.169.254/32 -p tcp -j DNAT --to-destination 10.1.1.1'] });
    assert.equal(f.remediation, 'remove it if it is not wanted: iptables-legacy -t nat -D PREROUTING -d 169.254.169.254/32 -p tcp -j DNAT --to-destination 10.1.1.1');
    assert.equal(needsOperator(f), true);
    assert.deepEqual(p.transactions, [], 'a foreign rule is never deleted by a pass');
  });

  test("Docker's own chains in the other backend are left alone", () => {
    const other = parseSave(section('nat', [':DOCKER - [0:0]', '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER', '-A DOCKER -i docker0 -j RETURN']));
    const p = planOn(readable(protectedSave(WANT.ipv4), other));
    assert.deepEqual(failing(p), []);
    assert.deepEqual(p.transactions, []);
  });
});

describe('planReconcile and rules that bypass NAT', () => {
  for (const rule of ['-A PREROUTING -d 169.254.169.254/32 -j CT --notrack', '-A PREROUTING -d 169.254.0.0/16 -j NOTRACK']) {
    test(`raw \`${rule}\` is a bypass-notrack FAIL with a remediation`, () => {
      const p = planOn(readable(save(protectedLines(WANT.ipv4, 'nat'), protectedLines(WANT.ipv4, 'filter'), [rule])));
      const f = only(p, 'bypass-notrack');
      assert.deepEqual({ id: f.id, status: f.status, table: f.table, evidence: f.evidence }, { id: 'IG-305', status: 'fail', table: 'raw', evidence: [rule] });
      assert.equal(f.remediation, `remove it if it is not wanted: iptables-nft -t raw ${rule.replace('-A ', '-D ')}`);
    });
  }

  test('a NOTRACK for another address is not a bypass', () => {
    const p = planOn(readable(save(protectedLines(WANT.ipv4, 'nat'), protectedLines(WANT.ipv4, 'filter'), ['-A PREROUTING -d 10.0.0.0/8 -j CT --notrack'])));
    assert.deepEqual(failing(p), []);
  });
});

describe('planReconcile and the filter OUTPUT chain (host-network containers)', () => {
  const parent = toCgroupPath('/docker')!;
  const hostNet = (inode: number): HostNetObservation => ({ containers: [], parent: { path: parent, inode }, inodes: new Map(), unavailable: null });
  const withOutput = (inode: number) => desiredOf(C, { ipv4: hostNetRules('ipv4', C.endpoints, hostNet(inode)) });

  test('a cgroup rule whose comment records another inode is cgroup-stale, and the chain is rewritten with the new one', () => {
    const before = withOutput(271);
    const after = withOutput(310);
    const p = planOn(readable(protectedSave(before.ipv4)), { want: after });
    assert.deepEqual(failing(p), ['IG-108 cgroup-stale IMDS-GUARD-OUT', 'IG-108 cgroup-stale IMDS-GUARD-OUT', 'IG-101 rule-missing IMDS-GUARD-OUT', 'IG-101 rule-missing IMDS-GUARD-OUT']);
    assert.deepEqual(written(p), ['ipv4 nft filter']);
    const out = after.ipv4.chains.find((c) => c.chain === 'IMDS-GUARD-OUT')!;
    assert.equal(p.transactions[0]!.payload, `*filter\n:IMDS-GUARD-OUT - [0:0]\n${ruleLines(out).join('\n')}\nCOMMIT\n`);
    assert.match(p.transactions[0]!.payload, /cgino=310/);
    assert.doesNotMatch(p.transactions[0]!.payload, /cgino=271/);
  });

  test('the same chain with the same inode is converged', () => {
    const p = planOn(readable(protectedSave(withOutput(310).ipv4)), { want: withOutput(310) });
    assert.deepEqual(p.transactions, []);
  });

  test('an OUTPUT chain of ours that the desired state no longer has (host-network off) is removed in the filter transaction', () => {
    const p = planOn(readable(protectedSave(withOutput(310).ipv4)));
    assert.deepEqual(written(p), ['ipv4 nft filter']);
    assert.equal(p.transactions[0]!.payload, `*filter\n-D OUTPUT ${JUMP_COMMENT} -j IMDS-GUARD-OUT\n:IMDS-GUARD-OUT - [0:0]\n-X IMDS-GUARD-OUT\nCOMMIT\n`);
  });

  test('compareChain tells a stale cgroup rule from an altered one', () => {
    const stale = compareChain(withOutput(310).ipv4.chains[2]!, protectedSave(withOutput(271).ipv4).get('filter')!, []);
    assert.equal(stale.stale.length, 2);
    assert.equal(stale.altered.length, 0);
    assert.equal(stale.rewriteChain, true);
    const otherPath = desiredOf(C, { ipv4: hostNetRules('ipv4', C.endpoints, { ...hostNet(271), parent: { path: toCgroupPath('/other')!, inode: 271 } }) });
    const altered = compareChain(withOutput(310).ipv4.chains[2]!, protectedSave(otherPath.ipv4).get('filter')!, []);
    assert.equal(altered.stale.length, 0, 'another path has another id: not ours at all');
    assert.equal(altered.unknown.length, 2);
  });
});

describe('planReconcile for a family with no endpoints', () => {
  test('our chains in that family are removed, and the removal does not count as protecting', () => {
    const all = config();
    const p = planOn(readable(protectedSave(WANT.ipv4)), { ipv6: readable(protectedSave(desiredOf(all).ipv6)) });
    assert.deepEqual(written(p), ['ipv6 nft nat (removal)', 'ipv6 nft filter (removal)']);
    assert.equal(p.transactions[0]!.payload, `*nat\n-D PREROUTING ${JUMP_COMMENT} -j IMDS-GUARD\n:IMDS-GUARD - [0:0]\n-X IMDS-GUARD\nCOMMIT\n`);
  });
});

describe('planReconcile and the boot script', () => {
  const tables = readable(protectedSave(WANT.ipv4));

  test('auto on a host without the local.d directory writes no script and says why', () => {
    const p = planOn(tables, { c: config({ bootScript: 'auto' }) });
    assert.equal(p.bootScript, null);
    assert.deepEqual(p.findings.filter((f) => f.id === 'IG-401').map((f) => `${f.status} ${f.message}`), ['info /etc/local.d does not exist (not an OpenRC host): no boot script written']);
  });

  test('auto with the directory present and no script plans to write it (boot-script-missing)', () => {
    const p = planOn(tables, { c: config({ bootScript: 'auto' }), over: { bootScript: { dirExists: true, file: null } } });
    assert.equal(p.bootScript?.state, 'missing');
    assert.equal(p.bootScript?.write, true);
    assert.equal(only(p, 'boot-script-missing').status, 'fail');
    assert.equal(isConverged(p), false);
  });

  test('a current, executable script is not rewritten', () => {
    const c = config({ bootScript: 'always' });
    const expected = renderBootScript('nft', [WANT.ipv4]);
    const p = planOn(tables, { c, over: { bootScript: { dirExists: true, file: { content: expected, mode: 0o755 } } } });
    assert.equal(p.bootScript?.write, false);
    assert.equal(isConverged(p), true);
  });

  test('the script restores only the families whose tables were read', () => {
    const c = config({ bootScript: 'always' });
    const p = planOn({ present: true, ours: { ok: false, why: 'x' }, other: null }, { c });
    assert.equal(p.bootScript, null, 'no family to restore: no script');
  });

  test("OpenRC's local service missing from the default runlevel is a warning, and a repair only when enabled in the config", () => {
    const warn = planOn(tables, { c: config({ bootScript: 'always' }), over: { localServiceEnabled: false } });
    assert.equal(warn.enableLocalService, false);
    assert.equal(only(warn, 'local-service-disabled').status, 'warn');
    const fix = planOn(tables, { c: config({ bootScript: 'always', enableLocalService: true }), over: { localServiceEnabled: false } });
    assert.equal(fix.enableLocalService, true);
    assert.equal(only(fix, 'local-service-disabled').status, 'fail');
  });
});

describe('planReconcile and Docker', () => {
  test('Docker unreachable is a warning: the protection does not depend on it', () => {
    const p = planOn(readable(protectedSave(WANT.ipv4)), { over: { dockerReachable: false } });
    assert.equal(only(p, 'docker').status, 'warn');
    assert.deepEqual(p.transactions, []);
  });

  test("Docker's networks are listed with how each is covered", () => {
    const docker = { networks: [{ id: '1', name: 'bridge', driver: 'bridge', bridge: 'docker0', parent: null, internal: false, containers: ['web'] }], containers: [], cgroupDriver: null, cgroupVersion: null };
    const p = planOn(readable(protectedSave(WANT.ipv4)), { over: { docker, dockerReachable: true } });
    assert.deepEqual(p.networks.map((n) => `${n.name} ${n.coverage}`), ['bridge forwarded']);
    assert.equal(only(p, 'network-covered').network, 'bridge');
  });
});

// The jump lines imported for the cases above are the ones support.ts renders.
test('support renders the jumps as iptables-save prints them', () => {
  assert.equal(jumpLine(NAT), NAT_JUMP);
  assert.equal(jumpLine(FWD), FWD_JUMP);
});
