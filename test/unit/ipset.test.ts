import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { canBeMember, compareSet, desiredSet, interfaceOfMember, memberFor, parseIpsetSave } from '../../src/core/ipset.js';

// As ipset 7.17 prints it.
const SAVED = `create imds-guard-4 hash:net,iface family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1d8dd407
add imds-guard-4 0.0.0.0/0,mynet0
add imds-guard-4 0.0.0.0/0,lab-custom
create other hash:ip family inet hashsize 1024 maxelem 65536
add other 10.0.0.1
`;

describe('parseIpsetSave', () => {
  test('reads each set with its type, family, create line and members', () => {
    const sets = parseIpsetSave(SAVED);
    assert.deepEqual([...sets.keys()], ['imds-guard-4', 'other']);
    const ours = sets.get('imds-guard-4')!;
    assert.equal(ours.type, 'hash:net,iface');
    assert.equal(ours.family, 'inet');
    assert.match(ours.createLine, /^create imds-guard-4 hash:net,iface family inet /);
    assert.deepEqual(ours.members, ['0.0.0.0/0,mynet0', '0.0.0.0/0,lab-custom']);
  });

  test('empty output is no sets', () => {
    assert.equal(parseIpsetSave('').size, 0);
  });
});

describe('set members', () => {
  test('one member per interface matches every source of its family', () => {
    assert.equal(memberFor('ipv4', 'mynet0'), '0.0.0.0/0,mynet0');
    assert.equal(memberFor('ipv6', 'mynet0'), '::/0,mynet0');
    assert.equal(interfaceOfMember('ipv4', '0.0.0.0/0,mynet0'), 'mynet0');
    assert.equal(interfaceOfMember('ipv4', '10.0.0.0/8,mynet0'), null);
  });

  test('a name with a comma or a trailing wildcard cannot be a member', () => {
    assert.equal(canBeMember('mynet0'), true);
    assert.equal(canBeMember('a,b'), false);
    assert.equal(canBeMember('br-+'), false);
  });
});

describe('compareSet', () => {
  const saved = parseIpsetSave(SAVED).get('imds-guard-4')!;

  test('a missing set is created with its members in one restore, and reported', () => {
    const cmp = compareSet(desiredSet('ipv4', ['mynet0']), null);
    assert.deepEqual(cmp.findings.map((f) => `${f.kind} ${f.severity}`), ['set-missing high']);
    assert.equal(cmp.payload, 'create imds-guard-4 hash:net,iface family inet\nadd imds-guard-4 0.0.0.0/0,mynet0\n');
    assert.deepEqual([...cmp.present], []);
  });

  test('a set holding exactly the desired members needs no write', () => {
    const cmp = compareSet(desiredSet('ipv4', ['mynet0', 'lab-custom']), saved);
    assert.deepEqual(cmp.findings, []);
    assert.equal(cmp.payload, null);
    assert.deepEqual([...cmp.present].sort(), ['lab-custom', 'mynet0']);
  });

  test('a new network is one add and nothing else; a member not desired is deleted and named', () => {
    const cmp = compareSet(desiredSet('ipv4', ['mynet0', 'newnet']), saved);
    assert.equal(cmp.payload, 'del imds-guard-4 0.0.0.0/0,lab-custom\nadd imds-guard-4 0.0.0.0/0,newnet\n');
    assert.deepEqual(cmp.findings.map((f) => ({ kind: f.kind, interface: f.interface, evidence: f.evidence })), [
      { kind: 'set-member-unknown', interface: 'lab-custom', evidence: ['add imds-guard-4 0.0.0.0/0,lab-custom'] },
    ]);
  });

  test('a set of another type under our name is destroyed and created again', () => {
    const wrong = parseIpsetSave('create imds-guard-4 hash:ip family inet hashsize 1024 maxelem 65536\nadd imds-guard-4 10.0.0.1\n').get('imds-guard-4')!;
    const cmp = compareSet(desiredSet('ipv4', ['mynet0']), wrong);
    assert.deepEqual(cmp.findings.map((f) => f.kind), ['set-altered']);
    assert.equal(cmp.payload, 'destroy imds-guard-4\ncreate imds-guard-4 hash:net,iface family inet\nadd imds-guard-4 0.0.0.0/0,mynet0\n');
  });

  test('an IPv4 set where the IPv6 one belongs is altered', () => {
    const v4 = parseIpsetSave('create imds-guard-6 hash:net,iface family inet hashsize 1024\n').get('imds-guard-6')!;
    assert.deepEqual(compareSet(desiredSet('ipv6', []), v4).findings.map((f) => f.kind), ['set-altered']);
  });
});
