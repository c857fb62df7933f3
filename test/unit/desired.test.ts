import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CLOUDS } from '../../src/core/clouds.js';
import { FORWARD_CHAIN, NAT_CHAIN, OUTPUT_CHAIN } from '../../src/core/names.js';
import { REJECT_RESET, desiredFamily, jumpArgs, ruleFor, ruleIdOf } from '../../src/core/desired.js';
import { guardSpecOf } from '../../src/core/pass-input.js';
import { joinArgs } from '../../src/core/rule.js';
import { config, desiredOf, ruleLines } from './support.js';

const chainText = (values: Record<string, unknown>, family: 'ipv4' | 'ipv6', chain: string): string[] => {
  const c = desiredOf(config(values))[family].chains.find((x) => x.chain === chain);
  return c === undefined ? [] : ruleLines(c);
};

describe('desiredFamily', () => {
  test('the default configuration wants, in nat and in filter FORWARD, one rule per endpoint and no interface match', () => {
    assert.deepEqual(chainText({}, 'ipv4', NAT_CHAIN), ['-A IMDS-GUARD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:d8b25c267408 -j REDIRECT --to-ports 1']);
    assert.deepEqual(chainText({}, 'ipv4', FORWARD_CHAIN), ['-A IMDS-GUARD-FWD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:525867e4855d -j REJECT --reject-with tcp-reset']);
    assert.deepEqual(chainText({}, 'ipv6', NAT_CHAIN), ['-A IMDS-GUARD -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:ff65be915e6f -j REDIRECT --to-ports 1']);
  });

  for (const cloud of ['default', ...CLOUDS] as const) {
    test(`${cloud === 'default' ? 'the default endpoints' : `the ${cloud} preset`}: no rule of either family matches an input interface, so any bridge, named anything, is covered`, () => {
      const want = desiredOf(config(cloud === 'default' ? {} : { cloud }));
      for (const f of Object.values(want)) for (const c of f.chains) for (const r of c.rules) assert.ok(!r.args.includes('-i') && !r.args.includes('--in-interface'), `${c.chain} ${joinArgs(r.args)}`);
    });
  }

  test('allowed interfaces return first, in configured order, in both the nat chain and the FORWARD backstop', () => {
    const values = { allow: ['vmbr0', 'eth1'], endpoints: ['169.254.169.254:80', '168.63.129.16:32526'] };
    const rule = (chain: string, lines: string[]) => lines.map((l) => l.replace(/imds-guard:[0-9a-f]{12}/, 'ID').replace(`-A ${chain} `, ''));
    assert.deepEqual(rule(NAT_CHAIN, chainText(values, 'ipv4', NAT_CHAIN)), [
      '-i vmbr0 -m comment --comment ID -j RETURN',
      '-i eth1 -m comment --comment ID -j RETURN',
      '-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment ID -j REDIRECT --to-ports 1',
      '-d 168.63.129.16/32 -p tcp -m tcp --dport 32526 -m comment --comment ID -j REDIRECT --to-ports 1',
    ]);
    assert.deepEqual(rule(FORWARD_CHAIN, chainText(values, 'ipv4', FORWARD_CHAIN)), [
      '-i vmbr0 -m comment --comment ID -j RETURN',
      '-i eth1 -m comment --comment ID -j RETURN',
      '-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment ID -j REJECT --reject-with tcp-reset',
      '-d 168.63.129.16/32 -p tcp -m tcp --dport 32526 -m comment --comment ID -j REJECT --reject-with tcp-reset',
    ]);
    const nat = desiredOf(config(values)).ipv4.chains[0]!;
    assert.deepEqual(nat.rules.map((r) => `${r.purpose} ${r.interface ?? ''}`), ['allow vmbr0', 'allow eth1', 'block ', 'block ']);
  });

  test('a family with no endpoints has no chains (nothing of ours belongs in its tables), even with allows and host-network rules', () => {
    const c = config({ endpoints: ['169.254.169.254'], allow: ['eth1'] });
    const spec = guardSpecOf(c);
    assert.deepEqual(desiredFamily(spec, 'ipv6', []), { family: 'ipv6', chains: [] });
    assert.equal(desiredFamily(spec, 'ipv4').chains.length, 2);
  });

  test('each family has its nat chain jumped from PREROUTING and its backstop jumped from FORWARD; the OUTPUT chain only with host-network rules', () => {
    const spec = guardSpecOf(config());
    const shape = (f: ReturnType<typeof desiredFamily>) => f.chains.map((c) => `${c.table} ${c.hook} -> ${c.chain}`);
    assert.deepEqual(shape(desiredFamily(spec, 'ipv4')), ['nat PREROUTING -> IMDS-GUARD', 'filter FORWARD -> IMDS-GUARD-FWD']);
    assert.deepEqual(shape(desiredFamily(spec, 'ipv4', [])), ['nat PREROUTING -> IMDS-GUARD', 'filter FORWARD -> IMDS-GUARD-FWD'], 'no rules: no OUTPUT chain');
    const out = ruleFor('ipv4', OUTPUT_CHAIN, 'block', ['-d', '169.254.169.254/32'], REJECT_RESET, {});
    assert.deepEqual(shape(desiredFamily(spec, 'ipv4', [out])), ['nat PREROUTING -> IMDS-GUARD', 'filter FORWARD -> IMDS-GUARD-FWD', 'filter OUTPUT -> IMDS-GUARD-OUT']);
  });

  const targets: readonly [string, Record<string, unknown>, 'ipv4' | 'ipv6', string][] = [
    ['redirect:8080', { target: 'redirect:8080' }, 'ipv4', '-j REDIRECT --to-ports 8080'],
    ['dnat:1.1.1.1 (the seed recipe)', { target: 'dnat:1.1.1.1', target6: 'redirect' }, 'ipv4', '-j DNAT --to-destination 1.1.1.1'],
    ['dnat:1.1.1.1:8080', { target: 'dnat:1.1.1.1:8080', target6: 'redirect' }, 'ipv4', '-j DNAT --to-destination 1.1.1.1:8080'],
    ['target6 dnat:[fd00::1]:8080 (brackets when a port follows)', { target6: 'dnat:[fd00::1]:8080' }, 'ipv6', '-j DNAT --to-destination [fd00::1]:8080'],
    ['target6 dnat:[FD00:0::1] (normalized as iptables prints it)', { target6: 'dnat:[FD00:0::1]' }, 'ipv6', '-j DNAT --to-destination fd00::1'],
  ];
  for (const [what, values, family, action] of targets) {
    test(`target ${what} is the nat rule's action, as iptables-save prints it back; the backstop still rejects`, () => {
      assert.ok(chainText(values, family, NAT_CHAIN)[0]!.endsWith(` ${action}`), chainText(values, family, NAT_CHAIN)[0]);
      assert.ok(chainText(values, family, FORWARD_CHAIN)[0]!.endsWith(' -j REJECT --reject-with tcp-reset'));
    });
  }

  test('the content id changes with what the rule means (target, family, chain), so a changed rule is told from ours', () => {
    const ids = ['redirect', 'redirect:2', 'dnat:1.1.1.1'].map((target) => desiredOf(config({ target, target6: 'redirect' })).ipv4.chains[0]!.rules[0]!.id);
    assert.equal(new Set(ids).size, 3);
    const d = desiredOf(config());
    const all = [d.ipv4.chains[0]!, d.ipv4.chains[1]!, d.ipv6.chains[0]!, d.ipv6.chains[1]!].map((c) => c.rules[0]!.id);
    assert.equal(new Set(all).size, 4);
  });

  test("a rule's extra comment (a cgroup inode) is carried in the comment but is not part of its id", () => {
    const a = ruleFor('ipv4', OUTPUT_CHAIN, 'block', ['-d', '169.254.169.254/32'], REJECT_RESET, {}, 'cgino=10');
    const b = ruleFor('ipv4', OUTPUT_CHAIN, 'block', ['-d', '169.254.169.254/32'], REJECT_RESET, {}, 'cgino=11');
    assert.equal(a.id, b.id);
    assert.deepEqual(a.args.slice(-6), ['--comment', `imds-guard:${a.id} cgino=10`, '-j', 'REJECT', '--reject-with', 'tcp-reset']);
  });

  test('the jump carries our comment and nothing else', () => {
    assert.equal(joinArgs(jumpArgs(NAT_CHAIN)), '-m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD');
    assert.equal(joinArgs(jumpArgs(FORWARD_CHAIN)), '-m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD-FWD');
  });

  test('ruleIdOf reads our id back from a comment (with or without an inode after it) and ignores other comments', () => {
    assert.equal(ruleIdOf('imds-guard:d8b25c267408'), 'd8b25c267408');
    assert.equal(ruleIdOf('imds-guard:d8b25c267408 cgino=272'), 'd8b25c267408');
    assert.equal(ruleIdOf('imds-guard: metadata endpoint protection'), null);
    assert.equal(ruleIdOf('imds-guard:D8B25C267408'), null);
    assert.equal(ruleIdOf('docker: published port'), null);
    assert.equal(ruleIdOf(undefined), null);
  });
});
