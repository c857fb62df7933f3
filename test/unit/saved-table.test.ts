import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { type SavedTable, chainRules, chainsJumpingTo, emptyTable, hasChain, parseSave, parseTable, ruleCount } from '../../src/core/saved-table.js';
import { modules, ruleComment, ruleTarget } from '../../src/core/rule.js';

const fixture = (name: string): string => readFileSync(new URL(`../fixtures/${name}`, import.meta.url), 'utf8');

/** A table as read, written out again: its chains in order, then each chain's rules. */
const written = (t: SavedTable): string => [...t.chains.map((c) => `:${c}`), ...[...t.lines].flatMap(([c, ls]) => ls.map((l) => `-A ${c} ${l}`))].join('\n');

// The nat table of a Docker 20.10 host with a user bridge, a published port and Swarm's
// ingress, as parseTable must see it whichever backend and counter style saved it.
const DOCKER_NAT = `:PREROUTING
:INPUT
:OUTPUT
:POSTROUTING
:DOCKER
:DOCKER-INGRESS
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER-INGRESS
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -o docker_gwbridge -m addrtype --src-type LOCAL -j MASQUERADE
-A POSTROUTING -s 172.18.0.0/16 ! -o docker_gwbridge -j MASQUERADE
-A POSTROUTING -s 172.19.0.0/16 ! -o br-5f1a2b3c4d5e -j MASQUERADE
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A DOCKER -i br-5f1a2b3c4d5e -j RETURN
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A DOCKER-INGRESS -p tcp -m tcp --dport 8000 -j DNAT --to-destination 172.18.0.2:8000
-A DOCKER-INGRESS -j RETURN`;

describe('parseTable on real Docker 20.10 saves', () => {
  for (const [what, file] of [
    ['iptables-nft-save with the filter table before nat', 'docker-20.10-swarm.nft.save'],
    ['iptables-legacy-save -c with [pkts:bytes] counters and the filter table after nat', 'docker-20.10-swarm.legacy-counters.save'],
  ] as const) {
    test(`${what}: reads only the nat section, drops comments and counters`, () => {
      const t = parseTable(fixture(file), 'nat');
      assert.equal(written(t), DOCKER_NAT);
      assert.deepEqual(t.chains, ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING', 'DOCKER', 'DOCKER-INGRESS']);
      assert.equal(hasChain(t, 'DOCKER-USER'), false, 'a filter chain must not leak into the nat table');
      assert.equal(hasChain(t, 'FORWARD'), false);
      assert.equal(ruleCount(t), 14);
      assert.deepEqual(chainRules(t, 'PREROUTING').map((r) => r.args.join(' ')), [
        '-m addrtype --dst-type LOCAL -j DOCKER-INGRESS',
        '-m addrtype --dst-type LOCAL -j DOCKER',
      ]);
      assert.deepEqual(chainsJumpingTo(t, 'DOCKER-INGRESS'), ['PREROUTING', 'OUTPUT']);
      assert.deepEqual(chainsJumpingTo(t, 'DOCKER'), ['PREROUTING', 'OUTPUT']);
    });

    test(`${what}: the filter table of the same save is read too, Docker's FORWARD chain in order`, () => {
      const filter = parseSave(fixture(file)).get('filter')!;
      assert.equal(filter.chains[1], 'FORWARD');
      assert.deepEqual(chainRules(filter, 'FORWARD').slice(0, 3).map((r) => ruleTarget(r)), ['DOCKER-USER', 'DOCKER-INGRESS', 'DOCKER-ISOLATION-STAGE-1']);
      assert.deepEqual(chainRules(filter, 'DOCKER-USER').map((r) => r.args.join(' ')), ['-j RETURN']);
      assert.equal(ruleCount(filter), 28);
    });
  }

  test("Docker's published-port DNAT parses into options with its negated interface", () => {
    const t = parseTable(fixture('docker-20.10-swarm.nft.save'), 'nat');
    const dnat = chainRules(t, 'DOCKER')[2]!;
    assert.equal(dnat.chain, 'DOCKER');
    assert.deepEqual(dnat.options, [
      { negated: true, name: '-i', values: ['docker0'] },
      { negated: false, name: '-p', values: ['tcp'] },
      { negated: false, name: '-m', values: ['tcp'] },
      { negated: false, name: '--dport', values: ['8080'] },
      { negated: false, name: '-j', values: ['DNAT'] },
      { negated: false, name: '--to-destination', values: ['172.17.0.2:80'] },
    ]);
    assert.equal(ruleTarget(dnat), 'DNAT');
    assert.deepEqual(modules(dnat), ['tcp']);
  });

  test("the seed recipe's rule and comments with spaces, escaped quotes and a backslash parse back to their text", () => {
    const t = parseTable(fixture('seed-recipe.nft.save'), 'nat');
    const [, , seed, quoted] = chainRules(t, 'PREROUTING');
    assert.deepEqual(seed!.args, ['-d', '169.254.169.254/32', '-i', 'docker0', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', '1.1.1.1']);
    assert.equal(ruleComment(quoted!), 'say "hi" to the \\ backslash');
    assert.equal(ruleTarget(quoted!), 'RETURN');
    assert.equal(ruleComment(chainRules(t, 'POSTROUTING').at(-1)!), 'two  spaces');
  });
});

describe('parseSave and parseTable on hand-made saves', () => {
  const MULTI = [
    '# Generated by iptables-save v1.8.9',
    '*mangle',
    ':PREROUTING ACCEPT [0:0]',
    '-A PREROUTING -j MARK --set-mark 1',
    'COMMIT',
    '# Completed',
    '*nat',
    ':PREROUTING ACCEPT [5:300]',
    '[3:180] -A PREROUTING -j RETURN',
    'COMMIT',
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD DROP [7:420]',
    ':IMDS-GUARD-FWD - [0:0]',
    '-A FORWARD -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD-FWD',
    'COMMIT',
    '*raw',
    ':PREROUTING ACCEPT [0:0]',
    '-A PREROUTING -d 169.254.169.254/32 -j CT --notrack',
    'COMMIT',
    '',
  ].join('\n');

  test('one save of every table gives nat, filter and raw each with only its own rules; a table imds-guard does not read (mangle) is left out', () => {
    const tables = parseSave(MULTI);
    assert.deepEqual([...tables.keys()], ['nat', 'filter', 'raw']);
    assert.equal(written(tables.get('nat')!), ':PREROUTING\n-A PREROUTING -j RETURN');
    assert.equal(
      written(tables.get('filter')!),
      ':INPUT\n:FORWARD\n:IMDS-GUARD-FWD\n-A FORWARD -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD-FWD',
    );
    assert.deepEqual(chainRules(tables.get('raw')!, 'PREROUTING').map((r) => r.args.join(' ')), ['-d 169.254.169.254/32 -j CT --notrack']);
    assert.equal(tables.get('nat')!.name, 'nat');
    assert.equal(tables.get('filter')!.name, 'filter');
  });

  test('parseTable picks one table out of a save of all of them', () => {
    const filter = parseTable(MULTI, 'filter');
    assert.deepEqual(filter.chains, ['INPUT', 'FORWARD', 'IMDS-GUARD-FWD']);
    assert.deepEqual(chainsJumpingTo(filter, 'IMDS-GUARD-FWD'), ['FORWARD']);
    assert.equal(hasChain(parseTable(MULTI, 'nat'), 'IMDS-GUARD-FWD'), false, 'a filter chain must not leak into nat');
  });

  test('a table the save does not hold is empty, not an error', () => {
    const t = parseTable('*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n', 'nat');
    assert.deepEqual(t, emptyTable('nat'));
    assert.deepEqual(t.chains, []);
    assert.equal(written(t), '');
    assert.deepEqual(chainRules(t, 'INPUT'), []);
    assert.equal(parseSave('').size, 0, 'an empty save (iptables-nft with no tables yet) holds no table');
  });

  test('a chain declared without rules exists and has no rules; counters of any size are dropped', () => {
    const t = parseTable('*nat\n:PREROUTING ACCEPT [18446744073709551615:1]\n:IMDS-GUARD - [0:0]\n[12:345] -A PREROUTING -j IMDS-GUARD\nCOMMIT\n', 'nat');
    assert.equal(hasChain(t, 'IMDS-GUARD'), true);
    assert.deepEqual(chainRules(t, 'IMDS-GUARD'), []);
    assert.equal(written(t), ':PREROUTING\n:IMDS-GUARD\n-A PREROUTING -j IMDS-GUARD');
  });

  test('comment lines inside a table section are dropped, and a quoted comment with spaces stays one argument', () => {
    const t = parseTable('*nat\n# a comment line\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m comment --comment "two  words # not a comment" -j RETURN\nCOMMIT\n', 'nat');
    assert.equal(written(t), ':PREROUTING\n-A PREROUTING -m comment --comment "two  words # not a comment" -j RETURN');
    assert.equal(ruleComment(chainRules(t, 'PREROUTING')[0]!), 'two  words # not a comment');
  });

  test('a section cut off before its COMMIT is still read (a truncated save is not silently empty)', () => {
    const t = parseTable('*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j RETURN\n', 'nat');
    assert.deepEqual(chainRules(t, 'PREROUTING').map((r) => ruleTarget(r)), ['RETURN']);
  });

  test('chainsJumpingTo finds -j and -g but not a chain whose name only starts the same', () => {
    const t = parseTable('*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:X - [0:0]\n-A PREROUTING -j IMDS-GUARD-OLD\n-A OUTPUT -g IMDS-GUARD\n-A X -m comment --comment "x" -j IMDS-GUARD\nCOMMIT\n', 'nat');
    assert.deepEqual(chainsJumpingTo(t, 'IMDS-GUARD'), ['OUTPUT', 'X']);
  });
});
