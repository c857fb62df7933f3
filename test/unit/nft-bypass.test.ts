import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { type Endpoint, parseEndpoint } from '../../src/core/endpoint.js';
import { isDrift, isFailure, needsOperator } from '../../src/core/findings.js';
import { type NativeNftRead, deleteRuleCommand, isPlainNftName, nftBypassFindings, tablesToRead } from '../../src/core/nft-bypass.js';
import { type NftRuleset, isXtablesTable, joinRulesets, parseNftListing, parseNftRuleset, ruleKey, tablePart } from '../../src/core/nft-ruleset.js';
import { planReconcile } from '../../src/core/plan.js';
import { config, desiredOf, freshSave, observation, policyOf, protectedSave, readable } from './support.js';

// Captured from real nft (see test/fixtures/nft/capture.sh): each .nft file loaded into a
// throwaway network namespace beside iptables-nft's nat and raw tables.
const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'nft');
const fixture = (name: string): string => readFileSync(join(FIXTURES, name), 'utf8');

const ep = (text: string): Endpoint => {
  const e = parseEndpoint(text);
  if (typeof e === 'string') throw new Error(e);
  return e;
};
const DEFAULT = [ep('169.254.169.254:80'), ep('[fd00:ec2::254]:80')];

function read(name: string): NativeNftRead {
  const ruleset = parseNftRuleset(fixture(`${name}.ruleset.json`));
  if (typeof ruleset === 'string') throw new Error(ruleset);
  return { ok: true, ruleset, listing: parseNftListing(fixture(`${name}.ruleset.txt`)) };
}

/** Each finding as "family table chain handle endpoint", sorted. */
const hits = (endpoints: readonly Endpoint[], r: NativeNftRead): string[] =>
  nftBypassFindings(endpoints, r, 'nft')
    .map((f) => `${f.family} ${f.table} ${f.chain} ${/handle (\d+)$/.exec(f.remediation ?? '')?.[1]} ${f.endpoint}`)
    .sort();

describe('parseNftRuleset', () => {
  test("keeps the native tables and leaves iptables-nft's (ip/ip6 filter, nat, raw, mangle, security) out", () => {
    const rs = parseNftRuleset(fixture('hostile.ruleset.json')) as NftRuleset;
    assert.deepEqual(rs.tables.map((t) => `${t.family} ${t.name}`), ['inet evil', 'ip other', 'ip6 six', 'inet maps']);
    assert.equal(rs.rules.some((r) => r.table === 'nat' || r.table === 'raw'), false);
    assert.deepEqual(rs.chains.filter((c) => c.table === 'evil').map((c) => `${c.name} ${c.base === null ? 'regular' : `${c.base.type} ${c.base.hook} ${c.base.prio}`}`), [
      'pre filter prerouting -300',
      'sub regular',
      'viamap regular',
      'natpre nat prerouting -150',
      'late filter prerouting 0',
      'natlate nat prerouting 100',
    ]);
    assert.equal(isXtablesTable('inet', 'nat'), false, 'iptables-nft makes ip and ip6 tables only');
    assert.equal(isXtablesTable('ip6', 'mangle'), true);
  });

  test('the chains listing alone says which native tables must be read: those with a base chain at prerouting before dstnat, or a nat one with it', () => {
    const chains = (name: string) => (parseNftRuleset(fixture(`${name}.chains.json`)) as NftRuleset).chains;
    const names = (name: string) => tablesToRead(chains(name)).map((t) => `${t.family} ${t.name}`);
    assert.deepEqual(names('hostile'), ['inet evil', 'ip other', 'ip6 six', 'inet maps']);
    // harmless: its prerouting chain at -300 may hold a bypass (its rules decide), the others cannot.
    assert.deepEqual(names('harmless'), ['inet harmless']);
    const only = (json: string) => tablesToRead((parseNftRuleset(json) as NftRuleset).chains).map((t) => `${t.family} ${t.name}`);
    const doc = (chain: object) => `{"nftables": [{"metainfo": {"json_schema_version": 1}}, {"chain": ${JSON.stringify(chain)}}]}`;
    assert.deepEqual(only(doc({ family: 'ip', table: 'nat', name: 'PREROUTING', type: 'nat', hook: 'prerouting', prio: -100 })), [], "iptables-nft's own");
    assert.deepEqual(only(doc({ family: 'inet', table: 't', name: 'c', type: 'filter', hook: 'prerouting', prio: -100 })), [], 'a filter chain at dstnat runs with it, after conntrack');
    assert.deepEqual(only(doc({ family: 'inet', table: 't', name: 'c', type: 'nat', hook: 'prerouting', prio: -100 })), ['inet t'], 'a nat chain at dstnat may bind first');
    assert.deepEqual(only(doc({ family: 'inet', table: 't', name: 'c', type: 'filter', hook: 'input', prio: -300 })), []);
    assert.deepEqual(only(doc({ family: 'inet', table: 't', name: 'c' })), [], 'a regular chain hooks nothing');
    assert.deepEqual(only(doc({ family: 'netdev', table: 't', name: 'c', type: 'filter', hook: 'ingress', prio: -500 })), []);
  });

  test('one table\'s part of a listing keeps only that table (whatever else nft printed), and parts join', () => {
    const all = parseNftRuleset(fixture('hostile.ruleset.json')) as NftRuleset;
    const evil = tablePart(all, 'inet', 'evil');
    assert.deepEqual(evil.tables, [{ family: 'inet', name: 'evil' }]);
    assert.ok(evil.rules.length > 0 && evil.rules.every((r) => r.family === 'inet' && r.table === 'evil'));
    assert.ok(evil.sets.every((x) => x.table === 'evil'));
    const joined = joinRulesets([evil, tablePart(all, 'ip', 'other')]);
    assert.deepEqual(joined.tables.map((t) => t.name), ['evil', 'other']);
    assert.equal(hits(DEFAULT, { ok: true, ruleset: joined, listing: new Map() }).length, hits(DEFAULT, { ok: true, ruleset: evil, listing: new Map() }).length + hits(DEFAULT, { ok: true, ruleset: tablePart(all, 'ip', 'other'), listing: new Map() }).length);
    assert.ok(isPlainNftName('firewalld') && isPlainNftName('my-table.v2'));
    assert.ok(!isPlainNftName('a b') && !isPlainNftName('x;flush ruleset') && !isPlainNftName('') && !isPlainNftName('9lives'));
  });

  test('what is not the document we know is a reason, not a ruleset (the audit fails closed on it)', () => {
    assert.equal(parseNftRuleset('Error: nope'), 'nft printed no JSON');
    assert.match(parseNftRuleset('{"tables": []}') as string, /not a ruleset/);
    assert.match(parseNftRuleset('{"nftables": [{"chain": {"family": "inet", "table": "t", "name": "c", "hook": "prerouting", "prio": "later"}}]}') as string, /priority we cannot read/);
    assert.match(parseNftRuleset('{"nftables": [{"rule": {"family": "inet", "table": "t", "chain": "c", "handle": "1"}}]}') as string, /rule we cannot read/);
    // A named priority, should some nft print one, is read as its number.
    const named = parseNftRuleset('{"nftables": [{"chain": {"family": "inet", "table": "t", "name": "c", "type": "filter", "hook": "prerouting", "prio": "dstnat - 5"}}]}') as NftRuleset;
    assert.equal(named.chains[0]?.base?.prio, -105);
  });
});

describe('parseNftListing', () => {
  test('finds each rule of a chain by its handle, as nft prints it; a planted "# handle" in a comment does not move it', () => {
    const listing = parseNftListing(fixture('hostile.ruleset.txt'));
    assert.equal(listing.get(ruleKey('inet', 'evil', 'pre', 9)), 'ip daddr 169.254.169.254 notrack # handle 9');
    assert.equal(listing.get(ruleKey('inet', 'evil', 'pre', 10)), 'ip daddr @meta4 tcp dport @webports notrack comment "x # handle 99" # handle 10');
    assert.equal(listing.get(ruleKey('inet', 'evil', 'pre', 99)), undefined);
    // Set blocks are not chains: their lines are never rules.
    assert.equal([...listing.values()].some((l) => l.startsWith('elements')), false);
  });
});

describe('nftBypassFindings on native tables captured from real nft', () => {
  test('every native rule that untracks endpoint traffic before dstnat, or dnats it in a nat chain at or before dstnat, and only those', () => {
    assert.deepEqual(hits(DEFAULT, read('hostile')), [
      // reached through a named verdict map whose key is the endpoint
      'ipv4 inet maps c 5 169.254.169.254:80',
      // a named set with a timeout element
      'ipv4 inet maps pre 7 169.254.169.254:80',
      'ipv4 inet evil natpre 18 169.254.169.254:80',
      // `meta l4proto tcp redirect`: no address match, so every endpoint
      'ipv4 inet evil natpre 20 169.254.169.254:80',
      'ipv4 inet evil pre 10 169.254.169.254:80',
      'ipv4 inet evil pre 9 169.254.169.254:80',
      // `jump sub` from the base chain: sub's `tcp dport 80 notrack` runs at -300 too
      'ipv4 inet evil sub 15 169.254.169.254:80',
      // a range of addresses and of ports
      'ipv4 ip other pre 4 169.254.169.254:80',
      'ipv6 inet evil natpre 20 [fd00:ec2::254]:80',
      'ipv6 inet evil pre 11 [fd00:ec2::254]:80',
      'ipv6 inet evil sub 15 [fd00:ec2::254]:80',
      'ipv6 ip6 six pre 3 [fd00:ec2::254]:80',
    ].sort());
  });

  test('an endpoint on another port is matched by the rules for that port (redirect of dport 8080)', () => {
    assert.deepEqual(hits([ep('169.254.169.254:8080')], read('hostile')).filter((h) => h.includes('natpre')), ['ipv4 inet evil natpre 19 169.254.169.254:8080', 'ipv4 inet evil natpre 20 169.254.169.254:8080']);
  });

  test('harmless native tables (after dstnat, another address, port or protocol, the output hook) are no finding', () => {
    assert.deepEqual(hits(DEFAULT, read('harmless')), []);
  });

  test('a finding names the table, chain and priority, shows the rule as nft prints it, and says the backstop still refuses untracked traffic', () => {
    const f = nftBypassFindings(DEFAULT, read('hostile'), 'nft').find((x) => x.chain === 'pre' && x.table === 'inet evil' && x.evidence.at(-1)?.endsWith('# handle 9'));
    assert.ok(f);
    assert.equal(f.id, 'IG-306');
    assert.equal(f.kind, 'bypass-nft');
    assert.equal(f.status, 'fail');
    assert.equal(f.severity, 'high');
    assert.match(f.message, /inet evil pre, type filter hook prerouting priority -300/);
    assert.match(f.message, /the filter backstop \(IG-110\) still refuses it/);
    assert.deepEqual(f.evidence, ['table inet evil chain pre { type filter hook prerouting priority -300; }', 'pre: ip daddr 169.254.169.254 notrack # handle 9']);
    assert.equal(f.remediation, 'nft delete rule inet evil pre handle 9');
    assert.equal(isFailure(f), true);
    assert.equal(needsOperator(f), true, "someone else's table: no pass repairs it");
    assert.equal(isDrift(f), true, 'logged as drift when it appears, like IG-305');
  });

  test('a rule reached through a jump shows the jump too; a dnat is critical and says where the backstop does not help', () => {
    const all = nftBypassFindings(DEFAULT, read('hostile'), 'nft');
    const viaJump = all.find((x) => x.chain === 'sub' && x.family === 'ipv4');
    assert.deepEqual(viaJump?.evidence, ['table inet evil chain pre { type filter hook prerouting priority -300; }', 'pre: jump sub # handle 12', 'sub: tcp dport 80 notrack # handle 15']);
    const dnat = all.find((x) => x.chain === 'natpre' && x.evidence.at(-1)?.includes('dnat'));
    assert.equal(dnat?.severity, 'critical');
    assert.match(dnat?.message ?? '', /does its own dnat .* may run before our nat rule/);
    assert.equal(dnat?.remediation, 'nft delete rule inet evil natpre handle 18');
  });

  test('a rule missing from the text listing (the ruleset changed between the two reads) still fails, saying so', () => {
    const r = read('hostile');
    const f = nftBypassFindings([DEFAULT[0]!], r.ok ? { ...r, listing: new Map() } : r, 'nft')[0];
    assert.match(f?.evidence.at(-1) ?? '', /rule handle \d+ in chain \S+ \(not in the text listing/);
  });

  test('the remediation is only a command when every name is one nft reads as a plain identifier', () => {
    assert.equal(deleteRuleCommand({ family: 'inet', table: 'evil', chain: 'pre', handle: 3 }), 'nft delete rule inet evil pre handle 3');
    assert.equal(deleteRuleCommand({ family: 'inet', table: 'x; flush ruleset', chain: 'pre', handle: 3 }), null);
    assert.equal(deleteRuleCommand({ family: 'inet', table: 'evil', chain: '$(reboot)', handle: 3 }), null);
    assert.equal(deleteRuleCommand({ family: 'bridge', table: 'evil', chain: 'pre', handle: 3 }), null);
    assert.equal(deleteRuleCommand({ family: 'inet', table: 'evil', chain: 'pre', handle: 0 }), null);
    const rs: NftRuleset = {
      tables: [{ family: 'inet', name: 'a b' }],
      chains: [{ family: 'inet', table: 'a b', name: 'pre', base: { type: 'filter', hook: 'prerouting', prio: -300 } }],
      rules: [{ family: 'inet', table: 'a b', chain: 'pre', handle: 4, expr: [{ notrack: null }] }],
      sets: [],
      xtables: [],
    };
    const [f] = nftBypassFindings([DEFAULT[0]!], { ok: true, ruleset: rs, listing: new Map() }, 'nft');
    assert.doesNotMatch(f?.remediation ?? '', /^nft delete/);
    assert.match(f?.remediation ?? '', /no command is printed/);
  });

  test('a match we cannot read may match (fail closed); a named set we do not have too', () => {
    const rs = (expr: unknown[]): NftRuleset => ({
      tables: [{ family: 'inet', name: 't' }],
      chains: [{ family: 'inet', table: 't', name: 'c', base: { type: 'filter', hook: 'prerouting', prio: -300 } }],
      rules: [{ family: 'inet', table: 't', chain: 'c', handle: 2, expr }],
      sets: [],
      xtables: [],
    });
    const n = (expr: unknown[]): number => nftBypassFindings([DEFAULT[0]!], { ok: true, ruleset: rs(expr), listing: new Map() }, 'nft').length;
    assert.equal(n([{ match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: '@gone' } }, { notrack: null }]), 1);
    assert.equal(n([{ match: { op: '==', left: { jhash: {} }, right: 3 } }, { notrack: null }]), 1);
    assert.equal(n([{ match: { op: '==', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: '169.254.169.1' } }, { notrack: null }]), 0);
    assert.equal(n([{ match: { op: '!=', left: { payload: { protocol: 'ip', field: 'daddr' } }, right: { set: ['169.254.169.254'] } } }, { notrack: null }]), 0);
  });

  test('a ruleset that could not be read: a warning when nft is not installed, a FAIL on an nft host when it failed', () => {
    const [missing] = nftBypassFindings(DEFAULT, { ok: false, missing: true, why: 'nft not found' }, 'nft');
    assert.equal(missing?.status, 'warn');
    assert.equal(missing?.id, 'IG-306');
    const [failed] = nftBypassFindings(DEFAULT, { ok: false, missing: false, why: 'nft -j list tables failed (exit 1): Operation not permitted' }, 'nft');
    assert.equal(failed?.status, 'fail');
    assert.equal(failed?.kind, 'table-unreadable');
    assert.equal(needsOperator(failed!), true);
    assert.equal(nftBypassFindings(DEFAULT, { ok: false, missing: false, why: 'x' }, 'legacy')[0]?.status, 'warn');
    assert.deepEqual(nftBypassFindings(DEFAULT, undefined, 'nft'), [], 'not read (a cheap read): nothing said');
  });
});

describe('planReconcile with a native ruleset', () => {
  const C = config({});
  const WANT = desiredOf(C);
  test('a protected host with a native notrack of the endpoint is not protected, and no transaction touches it', () => {
    const obs = observation({ ipv4: readable(protectedSave(WANT.ipv4)), ipv6: readable(protectedSave(WANT.ipv6)) }, { nft: read('hostile') });
    const plan = planReconcile(WANT, obs, policyOf(C));
    assert.deepEqual(plan.transactions, []);
    assert.equal(plan.findings.filter((f) => f.id === 'IG-306').length, 12);
    const harmless = planReconcile(WANT, observation({ ipv4: readable(protectedSave(WANT.ipv4)), ipv6: readable(protectedSave(WANT.ipv6)) }, { nft: read('harmless') }), policyOf(C));
    assert.equal(harmless.findings.some(isFailure), false);
  });

  test('an IPv6-less host is not judged on its IPv6 endpoints', () => {
    const obs = observation({ ipv4: readable(freshSave()), ipv6: { present: false, ours: { ok: false, why: 'no ipv6' }, other: null } }, { nft: read('hostile') });
    const fams = new Set(planReconcile(WANT, obs, policyOf(C)).findings.filter((f) => f.id === 'IG-306').map((f) => f.family));
    assert.deepEqual([...fams], ['ipv4']);
  });
});
