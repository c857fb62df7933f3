import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { describe, test } from 'node:test';
import { canonicalAddress, ipToBigInt, ipVersion } from '../../src/core/ip.js';

// node:net's isIP is the reference: ipVersion must say what it says, except for zone ids.
const AGREED = [
  '169.254.169.254', '0.0.0.0', '255.255.255.255', '1.2.3.4', '10.0.0.1',
  '256.1.1.1', '01.2.3.4', '1.2.3', '1.2.3.4.5', '1.2.3.4/32', ' 1.2.3.4', '1.2.3.4 ', '0x7f.0.0.1', '1..2.3',
  'fd00:ec2::254', '::', '::1', '1::', 'FD00:EC2::254', '1:2:3:4:5:6:7:8', '::ffff:1.2.3.4', '64:ff9b::192.0.2.33', 'fe80::1',
  '1:2:3:4:5:6:7:8:9', '1::2::3', ':::', '::ffff:256.1.1.1', '::1.2.3', 'fd00:ec2::254/128', '[fd00:ec2::254]', 'g::1', '12345::1',
  '', 'metadata.internal', 'localhost', ':', '1:2',
];

describe('ipVersion', () => {
  for (const text of AGREED) {
    test(`${JSON.stringify(text)}: ${isIP(text)}, as node:net says`, () => {
      assert.equal(ipVersion(text), isIP(text));
    });
  }
  // What the URL parser would drop or accept that an address must not carry.
  for (const text of ['fd00::\n1', 'fd00::\t1', 'fd00:ec2::254\n', '\nfd00::1', 'fe80::1%eth0', 'fe80::1%25eth0', 'fd00::1]/x[::1', 'fd00::1]:80']) {
    test(`${JSON.stringify(text)}: 0`, () => assert.equal(ipVersion(text), 0));
  }
});

describe('canonicalAddress and ipToBigInt', () => {
  test('IPv6 in the form iptables-save prints; IPv4 and anything else unchanged', () => {
    assert.equal(canonicalAddress('FD00:0EC2:0:0:0:0:0:0254'), 'fd00:ec2::254');
    assert.equal(canonicalAddress('::ffff:1.2.3.4'), '::ffff:102:304');
    assert.equal(canonicalAddress('169.254.169.254'), '169.254.169.254');
    assert.equal(canonicalAddress('metadata.internal'), 'metadata.internal');
  });
  test('addresses as numbers, an embedded IPv4 included', () => {
    assert.equal(ipToBigInt('169.254.169.254'), 0xa9fea9fen);
    assert.equal(ipToBigInt('::'), 0n);
    assert.equal(ipToBigInt('fd00:ec2::254'), 0xfd000ec2000000000000000000000254n);
    assert.equal(ipToBigInt('::ffff:1.2.3.4'), 0xffff01020304n);
    assert.equal(ipToBigInt('1:2:3:4:5:6:7:8'), 0x00010002000300040005000600070008n);
  });
  test('anything else throws', () => {
    assert.throws(() => ipToBigInt('metadata.internal'), /not an IP address/);
  });
});
