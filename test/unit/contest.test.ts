import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CONTEST_REPORT_MS, type RepairRecord, contestFindings, detectContests, foldContests, recordRepair, repairDetails, repairSignature, repairSignatureOf } from '../../src/core/contest.js';
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

const undermining: Finding = { id: 'IG-301', kind: 'foreign-undermining', status: 'fail', severity: 'critical', family: 'ipv4', table: 'nat', chain: 'PREROUTING', message: 'a foreign rule above the jump', evidence: ['-A PREROUTING -d 169.254.169.254/32 -j ACCEPT'] };
const notFirst: Finding = { ...undermining, id: 'IG-201', kind: 'jump-not-first', evidence: ['-A PREROUTING -d 169.254.169.254/32 -j ACCEPT', '-A PREROUTING -d 169.254.169.254/32 -j ACCEPT'] };
const info: Finding = { id: 'IG-505', kind: 'endpoints', status: 'info', severity: 'info', message: 'hiding ...', evidence: ['not drift'] };

test('what a repair undid: the drift kinds, and the foreign rules once each, bounded; info findings are not part of it', () => {
  assert.deepEqual(repairDetails([notFirst, undermining, info]), { kinds: ['foreign-undermining', 'jump-not-first'], evidence: ['-A PREROUTING -d 169.254.169.254/32 -j ACCEPT'] });
  const ours = { ...undermining, id: 'IG-101', kind: 'unprotected' as const, evidence: ['-A IMDS-GUARD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:d8b25c267408 -j REDIRECT --to-ports 1'] };
  assert.deepEqual(repairDetails([ours, undermining]).evidence, ['-A PREROUTING -d 169.254.169.254/32 -j ACCEPT'], 'our own rules are not evidence of a fighter');
  const piled = { ...undermining, evidence: Array.from({ length: 50 }, (_, i) => `-A PREROUTING -s 10.0.0.${i}/32 -j ACCEPT`) };
  assert.equal(repairDetails([piled]).evidence.length, 10);
});

test('a contest going on is recorded with the details of its last repair; it keeps its first time as the window moves on', () => {
  const t0 = Date.parse('2026-12-03T10:00:00Z');
  const details = () => ({ kinds: ['foreign-undermining'], evidence: ['-A PREROUTING -j ACCEPT'] });
  const first = foldContests([], [{ signature: sig, repairs: 5, firstAt: t0, lastAt: t0 + 4_000 }], details, t0 + 4_000);
  assert.deepEqual(first, [{ signature: sig, repairs: 5, firstAt: '2026-12-03T10:00:00.000Z', lastAt: '2026-12-03T10:00:04.000Z', kinds: ['foreign-undermining'], evidence: ['-A PREROUTING -j ACCEPT'] }]);
  const later = foldContests(first, [{ signature: sig, repairs: 7, firstAt: t0 + 60_000, lastAt: t0 + 90_000 }], details, t0 + 90_000);
  assert.equal(later[0]?.firstAt, '2026-12-03T10:00:00.000Z');
  assert.equal(later[0]?.lastAt, '2026-12-03T10:01:30.000Z');
  assert.equal(later[0]?.repairs, 7);
});

test('an ended contest stays recorded for CONTEST_REPORT_MS after its last repair, then is dropped', () => {
  const t0 = Date.parse('2026-12-03T10:00:00Z');
  const rec = foldContests([], [{ signature: sig, repairs: 5, firstAt: t0, lastAt: t0 }], () => ({ kinds: ['jump-not-first'], evidence: [] }), t0);
  assert.equal(foldContests(rec, [], () => undefined, t0 + CONTEST_REPORT_MS).length, 1);
  assert.equal(foldContests(rec, [], () => undefined, t0 + CONTEST_REPORT_MS + 1).length, 0);
});

test('audit: a recent contest is a WARN IG-307 with the foreign rules as evidence and a fix; an old one is not reported', () => {
  const c = { signature: sig, repairs: 9, firstAt: '2026-12-03T10:00:00.000Z', lastAt: '2026-12-03T10:02:00.000Z', kinds: ['foreign-undermining', 'jump-not-first'], evidence: ['-A PREROUTING -d 169.254.169.254/32 -j ACCEPT'] };
  const [f, ...rest] = contestFindings([c], new Date('2026-12-03T10:05:00Z'));
  assert.equal(rest.length, 0);
  assert.equal(f?.id, 'IG-307');
  assert.equal(f?.kind, 'contest');
  assert.equal(f?.status, 'warn');
  assert.equal(f?.severity, 'high');
  assert.match(f?.message ?? '', /9 times between 2026-12-03T10:00:00.000Z and 2026-12-03T10:02:00.000Z/);
  assert.match(f?.message ?? '', /foreign-undermining, jump-not-first/);
  assert.deepEqual(f?.evidence, c.evidence);
  assert.ok((f?.remediation ?? '').length > 20);
  assert.deepEqual(contestFindings([c], new Date(Date.parse(c.lastAt) + CONTEST_REPORT_MS + 1)), []);
});

test('the default rule keeps a fight a contest at the pace the backoff slows it to (one repair every 30 s)', () => {
  const every30s = Array.from({ length: 10 }, (_, i) => i * 30_000);
  const h = every30s.reduce<RepairRecord[]>((acc, at) => recordRepair(acc, { at, signature: sig }), []);
  assert.equal(detectContests(h, every30s.at(-1)!).length, 1);
  const twice = [0, 30_000].reduce<RepairRecord[]>((acc, at) => recordRepair(acc, { at, signature: sig }), []);
  assert.deepEqual(detectContests(twice, 30_000), [], 'someone fixing it by hand twice is no contest');
});
