import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EMPTY_HISTORY, recordPass } from '../../src/core/drift-history.js';
import type { Finding } from '../../src/core/findings.js';

const missing: Finding = { id: 'IG-101', kind: 'rule-missing', status: 'fail', severity: 'critical', family: 'ipv4', interface: 'docker0', endpoint: '169.254.169.254:80', message: 'docker0 not protected', evidence: [] };
const ok: Finding = { id: 'IG-101', kind: 'protected', status: 'pass', severity: 'info', message: 'ok', evidence: [] };

test('in enforce mode a drift that comes back after a repair is counted again', () => {
  let h = EMPTY_HISTORY;
  const first = recordPass(h, [missing], true, 't1', 10);
  h = first.history;
  const second = recordPass(h, [missing], true, 't2', 10);
  assert.equal(first.fresh.length, 1);
  assert.equal(second.fresh.length, 1);
  assert.equal(second.history.counts['rule-missing'], 2);
});

test('in report mode a drift that stays is logged once', () => {
  const first = recordPass(EMPTY_HISTORY, [missing], false, 't1', 10);
  const second = recordPass(first.history, [missing], false, 't2', 10);
  assert.equal(second.fresh.length, 0);
  assert.equal(second.history.counts['rule-missing'], 1);
});

test('passing findings are not drift', () => {
  const r = recordPass(EMPTY_HISTORY, [ok], false, 't', 10);
  assert.equal(r.fresh.length, 0);
  assert.deepEqual(r.history.counts, {});
});

test('the recent-drift list is bounded', () => {
  let h = EMPTY_HISTORY;
  for (let i = 0; i < 30; i++) h = recordPass(h, [missing], true, `t${i}`, 10).history;
  assert.equal(h.recent.length, 10);
  assert.equal(h.recent.at(-1)?.at, 't29');
});

test('rules for a network created since the last pass are coverage, not drift', async () => {
  const { splitNewCoverage } = await import('../../src/core/drift-history.js');
  const late: Finding = { ...missing, interface: 'late0' };
  const stale: Finding = { id: 'IG-401', kind: 'boot-script-stale', status: 'fail', severity: 'medium', message: 'stale', evidence: [] };
  const r = splitNewCoverage([missing, late, stale], new Set(['docker0']), ['docker0', 'late0']);
  assert.deepEqual(r.drift, [missing]);
  assert.deepEqual(r.coverage, [late, stale]);
  assert.equal(splitNewCoverage([late], null, ['late0']).drift.length, 1, 'the first pass has nothing to compare with');
});

test('rules left by a network removed since the last pass are coverage, not drift', async () => {
  const { splitNewCoverage } = await import('../../src/core/drift-history.js');
  const gone: Finding = { id: 'IG-104', kind: 'rule-unknown', status: 'fail', severity: 'medium', family: 'ipv4', interface: 'gone0', message: 'unknown', evidence: [] };
  const foreign: Finding = { id: 'IG-104', kind: 'rule-unknown', status: 'fail', severity: 'medium', family: 'ipv4', message: 'unknown', evidence: [] };
  const r = splitNewCoverage([gone, foreign], new Set(['docker0', 'gone0']), ['docker0']);
  assert.deepEqual(r.coverage, [gone]);
  assert.deepEqual(r.drift, [foreign], 'a rule imds-guard did not write stays drift');
  assert.deepEqual(splitNewCoverage([gone], new Set(['docker0', 'gone0']), ['docker0', 'gone0']).drift, [gone], 'a rule for an interface still covered is drift');
});

test('the first install on a host with nothing of ours is not drift; a half-installed host is', async () => {
  const { splitFirstInstall } = await import('../../src/core/drift-history.js');
  const f = (kind: Finding['kind'], family?: 'ipv4' | 'ipv6'): Finding => ({ id: 'X', kind, status: 'fail', severity: 'high', message: kind, evidence: [], ...(family ? { family } : {}) });
  const fresh = [f('chain-missing', 'ipv4'), f('rule-missing', 'ipv4'), f('chain-missing', 'ipv6'), f('jump-missing', 'ipv6'), f('boot-script-missing')];
  assert.equal(splitFirstInstall(fresh).drift.length, 0);
  const half = [f('chain-missing', 'ipv4'), f('rule-missing', 'ipv4'), f('rule-missing', 'ipv6'), f('boot-script-missing')];
  const r = splitFirstInstall(half);
  assert.deepEqual(r.drift.map((x) => x.kind), ['rule-missing', 'boot-script-missing']);
  assert.deepEqual(r.drift.map((x) => x.family), ['ipv6', undefined]);
});

test('set members of a network created or removed since the last pass are coverage, not drift', async () => {
  const { splitNewCoverage } = await import('../../src/core/drift-history.js');
  const added: Finding = { ...missing, kind: 'set-member-missing', interface: 'late0' };
  const gone: Finding = { id: 'IG-107', kind: 'set-member-unknown', status: 'fail', severity: 'medium', family: 'ipv4', interface: 'gone0', message: 'unknown', evidence: [] };
  const r = splitNewCoverage([added, gone], new Set(['docker0', 'gone0']), ['docker0', 'late0']);
  assert.deepEqual(r.drift, []);
  assert.deepEqual(r.coverage, [added, gone]);
});

test('the set appearing with the first custom-named bridge and its rule going with the last are coverage, not drift', async () => {
  const { splitNewCoverage } = await import('../../src/core/drift-history.js');
  const setMissing: Finding = { id: 'IG-106', kind: 'set-missing', status: 'fail', severity: 'high', family: 'ipv4', set: 'imds-guard-4', message: 'missing', evidence: [] };
  const setRule: Finding = { id: 'IG-104', kind: 'rule-unknown', status: 'fail', severity: 'medium', family: 'ipv4', set: 'imds-guard-4', message: 'unknown', evidence: [] };
  assert.deepEqual(splitNewCoverage([setMissing], new Set(['docker0']), ['docker0', 'first0']).drift, []);
  assert.deepEqual(splitNewCoverage([setRule], new Set(['docker0', 'last0']), ['docker0']).drift, []);
  assert.deepEqual(splitNewCoverage([setMissing, setRule], new Set(['docker0']), ['docker0']).drift, [setMissing, setRule], 'with no network added or removed, they are drift');
});

test('after a reboot the first pass creating the set and folding per-interface rules into it is install, not drift', async () => {
  const { splitFirstInstall } = await import('../../src/core/drift-history.js');
  const f = (kind: Finding['kind'], iface?: string): Finding => ({ id: 'X', kind, status: 'fail', severity: 'high', message: kind, family: 'ipv4', evidence: [], ...(iface ? { interface: iface } : {}) });
  const reboot = [f('set-missing'), f('set-member-missing', 'mynet0'), f('rule-unknown', 'mynet0')];
  assert.deepEqual(splitFirstInstall(reboot).drift, []);
  const tampered = [f('set-missing'), f('rule-missing', 'docker0'), f('rule-unknown')];
  assert.deepEqual(splitFirstInstall(tampered).drift.map((x) => `${x.kind} ${x.interface ?? ''}`), ['rule-missing docker0', 'rule-unknown '], "our own rules gone, or someone else's rule in our chain, stay drift");
});
