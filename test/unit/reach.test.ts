import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Endpoint } from '../../src/core/endpoint.js';
import { type ReachScope, canIntercept, cidrContains } from '../../src/core/reach.js';
import { type Rule, parseRuleArgs, splitArgs } from '../../src/core/rule.js';

const V4: Endpoint = { family: 'ipv4', address: '169.254.169.254', port: 80 };
const V6: Endpoint = { family: 'ipv6', address: 'fd00:ec2::254', port: 80 };
const rule = (chain: string, line: string): Rule => parseRuleArgs(chain, splitArgs(line));

/** A table's user chains, as compareChain hands them to canIntercept. */
const scopeOf = (allowed: readonly string[], chains: Record<string, readonly string[]> = {}): ReachScope => ({
  allowed,
  chain: (name) => chains[name]?.map((l) => rule(name, l)),
});

describe('canIntercept: can a PREROUTING rule above our jump take a new connection to the endpoint away?', () => {
  const cases: readonly [string, string, boolean, Endpoint?, (readonly string[])?][] = [
    ['an unconditional ACCEPT', '-j ACCEPT', true],
    ['an ACCEPT of exactly the endpoint', '-d 169.254.169.254/32 -p tcp -j ACCEPT', true],
    ['an ACCEPT of the link-local range', '-d 169.254.0.0/16 -j ACCEPT', true],
    ['an ACCEPT of the endpoint written with a dotted mask', '-d 169.254.0.0/255.255.0.0 -j ACCEPT', true],
    ['an ACCEPT of another range', '-d 10.0.0.0/8 -j ACCEPT', false],
    ['an ACCEPT of everything but the endpoint', '! -d 169.254.169.254/32 -j ACCEPT', false],
    ['an ACCEPT of everything but another range', '! -d 10.0.0.0/8 -j ACCEPT', true],
    ['a destination given as a hostname (unknown: assumed to match)', '-d metadata.internal -j ACCEPT', true],
    ['a UDP rule', '-p udp -j ACCEPT', false],
    ['a rule for everything but UDP', '! -p udp -j ACCEPT', true],
    ['a rule for everything but TCP', '! -p tcp -j ACCEPT', false],
    ['a rule for protocol number 6', '-p 6 -j ACCEPT', true],
    ['a rule for all protocols', '-p all -j ACCEPT', true],
    ['another TCP port', '-p tcp -m tcp --dport 443 -j ACCEPT', false],
    ['a port range containing 80', '-p tcp -m tcp --dport 1:1024 -j ACCEPT', true],
    ['an open-ended range from 81', '-p tcp -m tcp --dport 81: -j ACCEPT', false],
    ['an open-started range up to 80', '-p tcp -m tcp --dport :80 -j ACCEPT', true],
    ['every port but 80', '-p tcp -m tcp ! --dport 80 -j ACCEPT', false],
    ['every port but 443', '-p tcp -m tcp ! --dport 443 -j ACCEPT', true],
    ['a multiport list without 80', '-p tcp -m multiport --dports 443,8080 -j ACCEPT', false],
    ['a multiport list with a range holding 80', '-p tcp -m multiport --dports 22,79:81 -j ACCEPT', true],
    ['a negated multiport list holding 80', '-p tcp -m multiport ! --dports 80,443 -j ACCEPT', false],
    ['a port given by service name (unknown: assumed to match)', '-p tcp -m tcp --dport http -j ACCEPT', true],
    // Every interface is protected now; only an allowed one (a literal name) is let through.
    ['an interface nothing allows', '-i eth0 -j ACCEPT', true],
    ['an allowed interface', '-i eth0 -j ACCEPT', false, V4, ['eth0']],
    ['an interface other than the allowed one', '-i eth1 -j ACCEPT', true, V4, ['eth0']],
    ['a wildcard that covers an allowed interface (it covers others too)', '-i eth+ -j ACCEPT', true, V4, ['eth0']],
    ['every interface but the allowed one', '! -i eth0 -j ACCEPT', true, V4, ['eth0']],
    ['a custom-named bridge', '-i bang!x -j ACCEPT', true],
    ["Docker's addrtype LOCAL jump", '-m addrtype --dst-type LOCAL -j DOCKER', false],
    ["Swarm's addrtype LOCAL jump", '-m addrtype --dst-type LOCAL -j DOCKER-INGRESS', false],
    ['a jump for everything not LOCAL', '-m addrtype ! --dst-type LOCAL -j SOMEWHERE', true],
    ['a jump for LOCAL or UNICAST', '-m addrtype --dst-type LOCAL,UNICAST -j SOMEWHERE', true],
    ['a LOG rule (the packet goes on)', '-d 169.254.169.254/32 -j LOG', false],
    ['a MARK rule', '-j MARK --set-xmark 0x1/0xffffffff', false],
    ['a rule without a target (counts only)', '-d 169.254.169.254/32', false],
    ['a goto into a foreign chain', '-d 169.254.169.254/32 -g ELSEWHERE', true],
    ['an IPv6 ACCEPT of fd00::/8 for the IPv6 endpoint', '-d fd00::/8 -j ACCEPT', true, V6],
    ['an IPv6 ACCEPT of fe80::/10 for the IPv6 endpoint', '-d fe80::/10 -j ACCEPT', false, V6],
    ['an IPv4 range for the IPv6 endpoint', '-d 169.254.0.0/16 -j ACCEPT', false, V6],
  ];
  for (const [what, line, expected, endpoint = V4, allowed = []] of cases) {
    test(`${what}: ${expected ? 'can' : 'cannot'}`, () => {
      assert.equal(canIntercept(rule('PREROUTING', line), endpoint, scopeOf(allowed)), expected);
    });
  }
});

describe('canIntercept follows jumps into user chains of the same table', () => {
  const cases: readonly [string, Record<string, readonly string[]>, string, boolean][] = [
    ["Docker's DOCKER-USER holding only RETURN", { 'DOCKER-USER': ['-j RETURN'] }, '-j DOCKER-USER', false],
    ['a DOCKER-USER with an ACCEPT for the endpoint', { 'DOCKER-USER': ['-d 169.254.169.254/32 -j ACCEPT', '-j RETURN'] }, '-j DOCKER-USER', true],
    ['a DOCKER-USER with an ACCEPT for another range only', { 'DOCKER-USER': ['-d 10.0.0.0/8 -j ACCEPT', '-j RETURN'] }, '-j DOCKER-USER', false],
    ['a DOCKER-USER whose DROP only blocks', { 'DOCKER-USER': ['-d 169.254.169.254/32 -j DROP'] }, '-j DOCKER-USER', false],
    ['a chain that jumps on to a chain with an ACCEPT', { A: ['-j B'], B: ['-j ACCEPT'] }, '-j A', true],
    ['a chain that jumps to itself (followed only so deep, then assumed to take the traffic)', { LOOP: ['-j LOOP'] }, '-j LOOP', true],
    ['an empty user chain', { EMPTY: [] }, '-j EMPTY', false],
    ['a jump to a chain the table does not hold (unknown: assumed to take the traffic)', {}, '-j ELSEWHERE', true],
  ];
  for (const [what, chains, line, expected] of cases) {
    test(`${what}: ${expected ? 'can' : 'cannot'}`, () => assert.equal(canIntercept(rule('FORWARD', line), V4, scopeOf([], chains)), expected));
  }

  test('a RETURN in a built-in chain ends it (its policy applies), so it takes the traffic before our jump', () => {
    assert.equal(canIntercept(rule('PREROUTING', '-d 169.254.169.254/32 -j RETURN'), V4, scopeOf([])), true);
  });
});

describe('cidrContains', () => {
  const cases: readonly [string, string, boolean | null][] = [
    ['169.254.0.0/16', '169.254.169.254', true],
    ['169.254.169.254', '169.254.169.254', true],
    ['169.254.169.255/32', '169.254.169.254', false],
    ['0.0.0.0/0', '169.254.169.254', true],
    ['169.254.0.0/255.255.0.0', '169.254.169.254', true],
    ['169.254.0.0/255.0.255.0', '169.254.169.254', null],
    ['fd00::/8', 'fd00:ec2::254', true],
    ['fd00:ec2::254/128', 'fd00:ec2::254', true],
    ['fe80::/10', 'fd00:ec2::254', false],
    ['::/0', 'fd00:ec2::254', true],
    ['10.0.0.0/8', 'fd00:ec2::254', false],
    ['metadata.internal', '169.254.169.254', null],
  ];
  for (const [cidr, address, expected] of cases) {
    test(`${cidr} holds ${address}: ${expected}`, () => assert.equal(cidrContains(cidr, address), expected));
  }
});
