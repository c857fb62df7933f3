import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type RepairRecord, detectContests, recordRepair, repairSignature, repairSignatureOf } from '../../src/core/contest.js';
import type { Finding } from '../../src/core/findings.js';

const rule = { repeats: 3, withinMs: 10_000 };
const sig = repairSignature(['ipv4 jump-not-first IG-201', 'ipv4 foreign-undermining IG-301'])!;

function repairs(signature: string, times: readonly number[]): RepairRecord[] {
  return times.reduce<RepairRecord[]>((h, at) => recordRepair(h, { at, signature }, rule), []);
}

test('the signature of a pass does not depend on the order or repetition of its findings; nothing repaired is null', () => {
  assert.equal(repairSignature(['b', 'a', 'b']), repairSignature(['a', 'b']));
  assert.notEqual(repairSignature(['a']), repairSignature(['a', 'b']));
  assert.equal(repairSignature([]), null);
});

test('N identical repairs within T are a contest, reported with their count and span', () => {
  assert.deepEqual(detectContests(repairs(sig, [0, 4_000, 8_000]), 8_000, rule), [{ signature: sig, repairs: 3, firstAt: 0, lastAt: 8_000 }]);
});

test('one repair fewer than N, or the same repairs spread wider than T, is no contest', () => {
  assert.deepEqual(detectContests(repairs(sig, [0, 4_000]), 4_000, rule), []);
  assert.deepEqual(detectContests(repairs(sig, [0, 6_000, 12_000]), 12_000, rule), []);
});

test('different repairs do not add up to a contest (a flush, then a deleted jump, then a reload)', () => {
  const h = [...repairs('a', [0]), ...repairs('b', [1_000]), ...repairs('c', [2_000])];
  assert.deepEqual(detectContests(h, 2_000, rule), []);
});

test('a contest ends once the fighting stops for T', () => {
  const h = repairs(sig, [0, 1_000, 2_000]);
  assert.equal(detectContests(h, 2_000, rule).length, 1);
  assert.deepEqual(detectContests(h, 12_001, rule), []);
});

test('the history keeps only the window: a fight of hours does not grow it past the repairs of T', () => {
  const times = Array.from({ length: 10_000 }, (_, i) => i * 1_000);
  assert.equal(repairs(sig, times).length, 11);
});

test("a fighter's rule piling up changes the evidence, not the repair: the signature stays the same", () => {
  const jump = (evidence: string[]): Finding => ({ id: 'IG-201', kind: 'jump-not-first', status: 'fail', severity: 'critical', message: 'm', family: 'ipv4', backend: 'nft', evidence });
  const once = repairSignatureOf([jump(['-A PREROUTING -d 169.254.169.254/32 -j ACCEPT'])]);
  const twice = repairSignatureOf([jump(['-A PREROUTING -d 169.254.169.254/32 -j ACCEPT', '-A PREROUTING -d 169.254.169.254/32 -j ACCEPT'])]);
  assert.equal(once, twice);
  assert.notEqual(once, repairSignatureOf([{ ...jump([]), family: 'ipv6' }]));
  assert.equal(repairSignatureOf([{ ...jump([]), status: 'info' }]), null);
});
