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
import { type SavedTable, type TableName, parseSave } from '../../src/core/saved-table.js';
import { config, desiredOf, freshSave, jumpLine, observation, policyOf, protectedLines, protectedSave, readable, ruleLines, section } from './support.js';

const JUMP_COMMENT = '-m comment --comment "imds-guard: metadata endpoint protection"';
const NAT_JUMP = `-A PREROUTING ${JUMP_COMMENT} -j IMDS-GUARD`;
const FWD_JUMP = `-A FORWARD ${JUMP_COMMENT} -j IMDS-GUARD-FWD`;

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

  test("Docker's `-j DOCKER-USER` above the FORWARD jump is harmless while DOCKER-USER only returns", () => {
    const p = planOn(readable(save(protectedLines(WANT.ipv4, 'nat'), dockerUser(['-A DOCKER-USER -j RETURN']))));
    assert.deepEqual(p.transactions, []);
    assert.deepEqual(failing(p), []);
  });

  test('a DOCKER-USER holding an ACCEPT for the endpoint is not: the FORWARD jump is moved above it', () => {
    const p = planOn(readable(save(protectedLines(WANT.ipv4, 'nat'), dockerUser(['-A DOCKER-USER -d 169.254.169.254/32 -j ACCEPT', '-A DOCKER-USER -j RETURN']))));
    assert.deepEqual(failing(p), ['IG-201 jump-not-first IMDS-GUARD-FWD', 'IG-301 foreign-undermining IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD', 'IG-110 unprotected IMDS-GUARD-FWD']);
    assert.deepEqual(written(p), ['ipv4 nft filter']);
    assert.equal(p.transactions[0]!.payload, `*filter\n-D FORWARD ${JUMP_COMMENT} -j IMDS-GUARD-FWD\n-I FORWARD 1 ${JUMP_COMMENT} -j IMDS-GUARD-FWD\nCOMMIT\n`);
    assert.equal(only(p, 'foreign-undermining').remediation, 'remove it if it is not wanted: iptables-nft -t filter -D FORWARD -j DOCKER-USER');
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
