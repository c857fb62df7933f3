import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Endpoint } from '../../src/core/endpoint.js';
import { canIntercept, cidrContains, patternsOverlap } from '../../src/core/reach.js';
import { parseRuleArgs, splitArgs } from '../../src/core/rule.js';

const V4: Endpoint = { family: 'ipv4', address: '169.254.169.254', port: 80 };
const V6: Endpoint = { family: 'ipv6', address: 'fd00:ec2::254', port: 80 };
const DEFAULT_INTERFACES = ['docker0', 'docker_gwbridge', 'br-+'];

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
    ['another interface', '-i eth0 -j ACCEPT', false],
    ['a covered interface', '-i docker0 -j ACCEPT', true],
    ['a bridge matched by our br-+ wildcard', '-i br-0123456789ab -j ACCEPT', true],
    ['a wildcard overlapping docker0', '-i docker+ -j ACCEPT', true],
    ['a wildcard overlapping nothing we cover', '-i veth+ -j ACCEPT', false],
    ['every interface but eth0', '! -i eth0 -j ACCEPT', true],
    ['every interface but docker0, while br-+ is covered', '! -i docker0 -j ACCEPT', true],
    ['every interface but docker0, when only docker0 is covered', '! -i docker0 -j ACCEPT', false, V4, ['docker0']],
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
  for (const [what, line, expected, endpoint = V4, interfaces = DEFAULT_INTERFACES] of cases) {
    test(`${what}: ${expected ? 'can' : 'cannot'}`, () => {
      assert.equal(canIntercept(parseRuleArgs('PREROUTING', splitArgs(line)), endpoint, interfaces), expected);
    });
  }
});

describe('patternsOverlap', () => {
  const cases: readonly [string, string, boolean][] = [
    ['br-+', 'br-0123456789ab', true],
    ['br-0123456789ab', 'br-+', true],
    ['br-+', 'docker0', false],
    ['d+', 'docker+', true],
    ['docker+', 'd+', true],
    ['docker+', 'br-+', false],
    ['+', 'eth0', true],
    ['eth+', 'eth', true],
    ['eth0', 'eth0', true],
    ['eth0', 'eth1', false],
  ];
  for (const [a, b, expected] of cases) {
    test(`${a} and ${b}: ${expected}`, () => assert.equal(patternsOverlap(a, b), expected));
  }
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
