import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { resolveConfig } from '../../src/core/config.js';
import { coveredInterfaces, desiredFamily, ruleIdOf } from '../../src/core/desired.js';
import { joinArgs } from '../../src/core/rule.js';

const rulesOf = (values: Record<string, unknown>, family: 'ipv4' | 'ipv6', interfaces: readonly string[]): string[] =>
  desiredFamily(resolveConfig([{ source: 'test', values }]), family, interfaces).rules.map((r) => `-A IMDS-GUARD ${joinArgs(r.args)}`);

describe('desiredFamily', () => {
  test('the default configuration wants one REDIRECT to port 1 per interface, in configured order, with a content id in the comment', () => {
    assert.deepEqual(rulesOf({}, 'ipv4', ['docker0', 'docker_gwbridge', 'br-+']), [
      '-A IMDS-GUARD -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:1189f431dc7c -j REDIRECT --to-ports 1',
      '-A IMDS-GUARD -d 169.254.169.254/32 -i docker_gwbridge -p tcp -m tcp --dport 80 -m comment --comment imds-guard:abec39a8c6fe -j REDIRECT --to-ports 1',
      '-A IMDS-GUARD -d 169.254.169.254/32 -i br-+ -p tcp -m tcp --dport 80 -m comment --comment imds-guard:ba669814d24f -j REDIRECT --to-ports 1',
    ]);
    assert.deepEqual(rulesOf({}, 'ipv6', ['docker0']), [
      '-A IMDS-GUARD -d fd00:ec2::254/128 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:ad75a5f5a288 -j REDIRECT --to-ports 1',
    ]);
  });

  const targets: readonly [string, Record<string, unknown>, 'ipv4' | 'ipv6', string][] = [
    ['redirect:8080', { target: 'redirect:8080' }, 'ipv4', '-d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:bee4c23e2bea -j REDIRECT --to-ports 8080'],
    ['dnat:1.1.1.1 (the seed recipe)', { target: 'dnat:1.1.1.1', target6: 'redirect' }, 'ipv4', '-d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:d4b10509db47 -j DNAT --to-destination 1.1.1.1'],
    ['dnat:1.1.1.1:8080', { target: 'dnat:1.1.1.1:8080', target6: 'redirect' }, 'ipv4', '-d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:19b4dfc1e029 -j DNAT --to-destination 1.1.1.1:8080'],
    ['target6 dnat:[fd00::1]:8080 (brackets when a port follows)', { target: 'redirect', target6: 'dnat:[fd00::1]:8080' }, 'ipv6', '-d fd00:ec2::254/128 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:3315ffa76eaf -j DNAT --to-destination [fd00::1]:8080'],
    ['target6 dnat:[FD00:0::1] (normalized as iptables prints it)', { target6: 'dnat:[FD00:0::1]' }, 'ipv6', '-d fd00:ec2::254/128 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:92775b820cce -j DNAT --to-destination fd00::1'],
  ];
  for (const [what, values, family, args] of targets) {
    test(`target ${what} renders the arguments iptables-save prints back`, () => {
      assert.deepEqual(rulesOf(values, family, ['docker0']), [`-A IMDS-GUARD ${args}`]);
    });
  }

  test('the content id changes with the target, so a changed rule is told from ours', () => {
    const ids = ['redirect', 'redirect:2', 'dnat:1.1.1.1'].map((target) => desiredFamily(resolveConfig([{ source: 'test', values: { target, target6: 'redirect' } }]), 'ipv4', ['docker0']).rules[0]!.id);
    assert.equal(new Set(ids).size, 3);
  });

  test('the jump carries our comment and nothing else', () => {
    assert.equal(joinArgs(desiredFamily(resolveConfig([]), 'ipv4', ['docker0']).jumpArgs), '-m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD');
  });

  test('ruleIdOf reads our id back from a comment and ignores other comments', () => {
    assert.equal(ruleIdOf('imds-guard:1189f431dc7c'), '1189f431dc7c');
    assert.equal(ruleIdOf('docker: published port'), null);
    assert.equal(ruleIdOf(undefined), null);
  });
});

describe('coveredInterfaces', () => {
  const cases: readonly [string, readonly string[], readonly string[], readonly string[]][] = [
    ['no Docker bridges: just the configured ones', ['docker0', 'br-+'], [], ['docker0', 'br-+']],
    ["Docker's own names are already covered by docker0 and br-+", ['docker0', 'docker_gwbridge', 'br-+'], ['docker0', 'br-0123456789ab', 'docker_gwbridge'], ['docker0', 'docker_gwbridge', 'br-+']],
    ['custom-named bridges are added once each, sorted, after the configured ones', ['docker0', 'br-+'], ['mynet0', 'alpha', 'mynet0', 'br-abc'], ['docker0', 'br-+', 'alpha', 'mynet0']],
    ['a custom name that only starts like a configured exact name is added', ['docker0'], ['docker01'], ['docker0', 'docker01']],
  ];
  for (const [behaviour, configured, discovered, expected] of cases) {
    test(behaviour, () => assert.deepEqual(coveredInterfaces(configured, discovered), expected));
  }
});
