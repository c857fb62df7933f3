import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DECIDING, WHOLE_TABLE_MAX_RULES, chainsOfTableListing, savedFamiliesOf, wholeTablesOf } from '../../src/core/deciding-reads.js';
import type { Observation } from '../../src/core/plan.js';
import { type TableName, parseListing, parseSave } from '../../src/core/saved-table.js';

const FILTER = `-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N DOCKER-USER
-N IMDS-GUARD-FWD
-A FORWARD -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD-FWD
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
-A IMDS-GUARD-FWD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:525867e4855d -j REJECT --reject-with tcp-reset
`;

const chainListing = (chain: string): string | null => {
  const lines = FILTER.split('\n').filter((l) => l.startsWith(`-P ${chain} `) || l === `-N ${chain}` || l.startsWith(`-A ${chain} `));
  return lines.length === 0 ? null : `${lines.join('\n')}\n`;
};

test('a whole-table listing split by chain parses exactly as the listings of each chain alone, a missing chain included', () => {
  const chains = DECIDING.find((d) => d.table === 'filter')!.chains;
  const whole = parseListing('filter', chainsOfTableListing(FILTER, chains));
  const oneByOne = parseListing('filter', chains.map((c) => [c, chainListing(c)] as const));
  assert.deepEqual(whole, oneByOne);
  assert.equal(whole.chains.includes('IMDS-GUARD-OUT'), false, 'not declared in the table: absent, as -S IMDS-GUARD-OUT fails');
  assert.deepEqual(whole.lines.get('DOCKER-USER'), ['-j RETURN']);
});

test('a rule of a chain named like a prefix of another is not taken for it', () => {
  const text = '-P FORWARD ACCEPT\n-N FORWARD-X\n-A FORWARD-X -j ACCEPT\n';
  const t = parseListing('filter', chainsOfTableListing(text, ['FORWARD', 'FORWARD-X']));
  assert.deepEqual(t.lines.get('FORWARD'), []);
  assert.deepEqual(t.lines.get('FORWARD-X'), ['-j ACCEPT']);
});

const save = (natRules: number): string => {
  const dnat = Array.from({ length: natRules }, (_, i) => `-A DOCKER -p tcp -m tcp --dport ${10000 + i} -j DNAT --to-destination 172.17.0.2:80`);
  return ['*nat', ':PREROUTING ACCEPT [0:0]', ':DOCKER - [0:0]', ...dnat, 'COMMIT', '*filter', ':FORWARD ACCEPT [0:0]', '-A FORWARD -j ACCEPT', 'COMMIT', ''].join('\n');
};
const observed = (v4: string, v6: string | null, v6ok = true): Observation =>
  ({
    families: {
      ipv4: { present: true, ours: { ok: true, tables: parseSave(v4) }, other: null },
      ipv6: v6 === null ? { present: false, ours: { ok: false, why: 'no ipv6' }, other: null } : { present: true, ours: v6ok ? { ok: true, tables: parseSave(v6) } : { ok: false, why: 'unreadable' }, other: null },
    },
  }) as unknown as Observation;

test('tables the last full read found small are listed whole, judged per family: a big one is read chain by chain in its own family only', () => {
  const all: TableName[] = ['nat', 'filter', 'raw'];
  assert.deepEqual(wholeTablesOf(observed(save(10), save(10))), { ipv4: all, ipv6: all });
  assert.deepEqual(wholeTablesOf(observed(save(WHOLE_TABLE_MAX_RULES), save(0))), { ipv4: all, ipv6: all });
  assert.deepEqual(wholeTablesOf(observed(save(WHOLE_TABLE_MAX_RULES + 1), save(0))), { ipv4: ['filter', 'raw'], ipv6: all }, "10,000 published IPv4 ports do not make IPv6's small nat table cost two processes");
  assert.deepEqual(wholeTablesOf(observed(save(0), save(10_000))), { ipv4: all, ipv6: ['filter', 'raw'] });
  assert.deepEqual(wholeTablesOf(observed(save(10_000), null)), { ipv4: ['filter', 'raw'], ipv6: [] }, 'a family the host does not have is not read at all');
});

test('a family that could not be read says nothing of its sizes: its tables chain by chain, the other family as its sizes say', () => {
  assert.deepEqual(wholeTablesOf(observed(save(1), save(1), false)), { ipv4: ['nat', 'filter', 'raw'], ipv6: [] });
});

test('a family whose tables hold at most WHOLE_TABLE_MAX_RULES rules in all is saved whole (one process); a bigger, unreadable or absent one is listed', () => {
  // save(n) holds n nat rules plus one filter rule.
  assert.deepEqual(savedFamiliesOf(observed(save(10), save(10))), ['ipv4', 'ipv6']);
  assert.deepEqual(savedFamiliesOf(observed(save(WHOLE_TABLE_MAX_RULES - 1), save(0))), ['ipv4', 'ipv6']);
  assert.deepEqual(savedFamiliesOf(observed(save(WHOLE_TABLE_MAX_RULES), save(0))), ['ipv6'], 'counted over every table of the family, not table by table');
  assert.deepEqual(savedFamiliesOf(observed(save(10_000), save(0))), ['ipv6'], "10,000 published IPv4 ports: IPv6's few rules still in one save");
  assert.deepEqual(savedFamiliesOf(observed(save(0), null)), ['ipv4'], 'a family the host does not have is not read at all');
  assert.deepEqual(savedFamiliesOf(observed(save(1), save(1), false)), ['ipv4'], 'a family that could not be read says nothing of its size');
});
