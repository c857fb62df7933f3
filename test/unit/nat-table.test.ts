import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { chainRules, chainsJumpingTo, hasChain, parseNatTable, ruleCount } from '../../src/core/nat-table.js';
import { joinArgs, modules, parseRuleArgs, ruleComment, ruleTarget, splitArgs } from '../../src/core/rule.js';

const fixture = (name: string): string => readFileSync(new URL(`../fixtures/${name}`, import.meta.url), 'utf8');

// The nat table of a Docker 20.10 host with a user bridge, a published port and Swarm's
// ingress, as parseNatTable must see it whichever backend and counter style saved it.
const DOCKER_CANONICAL = `:PREROUTING ACCEPT
:INPUT ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
:DOCKER -
:DOCKER-INGRESS -
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

describe('parseNatTable on real Docker 20.10 saves', () => {
  for (const [what, file] of [
    ['iptables-nft-save with the filter table before nat', 'docker-20.10-swarm.nft.save'],
    ['iptables-legacy-save -c with [pkts:bytes] counters and the filter table after nat', 'docker-20.10-swarm.legacy-counters.save'],
  ] as const) {
    test(`${what}: reads only the nat section, drops comments and counters`, () => {
      const t = parseNatTable(fixture(file));
      assert.equal(t.canonical, DOCKER_CANONICAL);
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
  }

  test("Docker's published-port DNAT parses into options with its negated interface", () => {
    const t = parseNatTable(fixture('docker-20.10-swarm.nft.save'));
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
    const t = parseNatTable(fixture('seed-recipe.nft.save'));
    const [, , seed, quoted] = chainRules(t, 'PREROUTING');
    assert.deepEqual(seed!.args, ['-d', '169.254.169.254/32', '-i', 'docker0', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', '1.1.1.1']);
    assert.equal(ruleComment(quoted!), 'say "hi" to the \\ backslash');
    assert.equal(ruleTarget(quoted!), 'RETURN');
    assert.equal(ruleComment(chainRules(t, 'POSTROUTING').at(-1)!), 'two  spaces');
  });
});

describe('parseNatTable on hand-made saves', () => {
  test('a save without a nat table is an empty table', () => {
    const t = parseNatTable('*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n');
    assert.deepEqual(t.chains, []);
    assert.equal(t.canonical, '');
    assert.deepEqual(chainRules(t, 'INPUT'), []);
  });

  test('with several tables, rules after the nat COMMIT belong to the next table, not to nat', () => {
    const save = ['*mangle', ':PREROUTING ACCEPT [0:0]', '-A PREROUTING -j MARK --set-mark 1', 'COMMIT', '*nat', ':PREROUTING ACCEPT [5:300]', '[3:180] -A PREROUTING -j RETURN', 'COMMIT', '*raw', ':PREROUTING ACCEPT [0:0]', '-A PREROUTING -j CT --notrack', 'COMMIT', ''].join('\n');
    const t = parseNatTable(save);
    assert.equal(t.canonical, ':PREROUTING ACCEPT\n-A PREROUTING -j RETURN');
    assert.deepEqual(chainRules(t, 'PREROUTING').map((r) => ruleTarget(r)), ['RETURN']);
  });

  test('a chain declared without rules exists and has no rules; counters of any size are dropped', () => {
    const t = parseNatTable('*nat\n:PREROUTING ACCEPT [18446744073709551615:1]\n:IMDS-GUARD - [0:0]\n[12:345] -A PREROUTING -j IMDS-GUARD\nCOMMIT\n');
    assert.equal(hasChain(t, 'IMDS-GUARD'), true);
    assert.deepEqual(chainRules(t, 'IMDS-GUARD'), []);
    assert.equal(t.canonical, ':PREROUTING ACCEPT\n:IMDS-GUARD -\n-A PREROUTING -j IMDS-GUARD');
  });

  test('chainsJumpingTo finds -j and -g but not a chain whose name only starts the same', () => {
    const t = parseNatTable('*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:X - [0:0]\n-A PREROUTING -j IMDS-GUARD-OLD\n-A OUTPUT -g IMDS-GUARD\n-A X -m comment --comment "x" -j IMDS-GUARD\nCOMMIT\n');
    assert.deepEqual(chainsJumpingTo(t, 'IMDS-GUARD'), ['OUTPUT', 'X']);
  });
});

describe('splitArgs', () => {
  const cases: readonly [string, string, readonly string[]][] = [
    ['plain words', '-A PREROUTING -i docker0 -j DOCKER', ['-A', 'PREROUTING', '-i', 'docker0', '-j', 'DOCKER']],
    ['a quoted comment with spaces', '-m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD', ['-m', 'comment', '--comment', 'imds-guard: metadata endpoint protection', '-j', 'IMDS-GUARD']],
    ['escaped quotes inside quotes', '--comment "say \\"hi\\""', ['--comment', 'say "hi"']],
    ['an escaped backslash', '--comment "a \\\\ b"', ['--comment', 'a \\ b']],
    ['an empty quoted argument', '--comment "" -j RETURN', ['--comment', '', '-j', 'RETURN']],
    ['runs of spaces and tabs between arguments', '-j\t RETURN  ', ['-j', 'RETURN']],
    ['a quoted part inside a word', '--comment pre"fix suf"fix', ['--comment', 'prefix suffix']],
    ['two spaces kept inside quotes', '--comment "two  spaces"', ['--comment', 'two  spaces']],
  ];
  for (const [what, line, args] of cases) {
    test(`splits ${what}`, () => assert.deepEqual(splitArgs(line), args));
  }

  test('joinArgs quotes exactly what needs it, and splitArgs reads back what joinArgs wrote', () => {
    const args = ['-m', 'comment', '--comment', 'say "hi" \\ there', '--comment', '', '-i', 'br-+', '-j', 'RETURN'];
    const line = joinArgs(args);
    assert.equal(line, '-m comment --comment "say \\"hi\\" \\\\ there" --comment "" -i br-+ -j RETURN');
    assert.deepEqual(splitArgs(line), args);
  });
});

describe('parseRuleArgs', () => {
  const cases: readonly [string, string, readonly { negated: boolean; name: string; values: string[] }[]][] = [
    ['negations bind to the next option only', '! -s 10.0.0.0/8 ! -i docker0 -d 169.254.169.254/32 -j ACCEPT', [
      { negated: true, name: '-s', values: ['10.0.0.0/8'] },
      { negated: true, name: '-i', values: ['docker0'] },
      { negated: false, name: '-d', values: ['169.254.169.254/32'] },
      { negated: false, name: '-j', values: ['ACCEPT'] },
    ]],
    ['a negated match option after its module', '-p tcp -m tcp ! --dport 80 -j RETURN', [
      { negated: false, name: '-p', values: ['tcp'] },
      { negated: false, name: '-m', values: ['tcp'] },
      { negated: true, name: '--dport', values: ['80'] },
      { negated: false, name: '-j', values: ['RETURN'] },
    ]],
    ['multiport lists and ranges as one value', '-p tcp -m multiport --dports 80,443,8000:8100 -j REDIRECT --to-ports 1', [
      { negated: false, name: '-p', values: ['tcp'] },
      { negated: false, name: '-m', values: ['multiport'] },
      { negated: false, name: '--dports', values: ['80,443,8000:8100'] },
      { negated: false, name: '-j', values: ['REDIRECT'] },
      { negated: false, name: '--to-ports', values: ['1'] },
    ]],
    ['an option with several values', '-m set --match-set blocked dst,dst -j DROP', [
      { negated: false, name: '-m', values: ['set'] },
      { negated: false, name: '--match-set', values: ['blocked', 'dst,dst'] },
      { negated: false, name: '-j', values: ['DROP'] },
    ]],
  ];
  for (const [what, line, options] of cases) {
    test(`reads ${what}`, () => assert.deepEqual(parseRuleArgs('PREROUTING', splitArgs(line)).options, options));
  }
});
