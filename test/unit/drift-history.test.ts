import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { toCgroupPath } from '../../src/core/cgroup.js';
import { EMPTY_HISTORY, recordPass, splitFirstInstall } from '../../src/core/drift-history.js';
import type { Finding } from '../../src/core/findings.js';
import { bootHostNetRules, hostNetRules } from '../../src/core/host-network.js';
import { planReconcile } from '../../src/core/plan.js';
import { parseSave } from '../../src/core/saved-table.js';
import { config, desiredOf, freshSave, observation, policyOf, protectedLines, protectedSave, readable, section } from './support.js';

const missing: Finding = { id: 'IG-101', kind: 'rule-missing', status: 'fail', severity: 'critical', family: 'ipv4', chain: 'IMDS-GUARD', endpoint: '169.254.169.254:80', message: 'not refused', evidence: [] };
const ok: Finding = { id: 'IG-101', kind: 'protected', status: 'pass', severity: 'info', message: 'ok', evidence: [] };

describe('recordPass', () => {
  test('in enforce mode a drift that comes back after a repair is counted again', () => {
    const first = recordPass(EMPTY_HISTORY, [missing], true, 't1', 10);
    const second = recordPass(first.history, [missing], true, 't2', 10);
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

  test('passing findings and exposure (not drift) are not counted', () => {
    const exposed: Finding = { id: 'IG-603', kind: 'network-not-coverable', status: 'fail', severity: 'high', network: 'lan', message: 'exposed', evidence: [] };
    const r = recordPass(EMPTY_HISTORY, [ok, exposed], false, 't', 10);
    assert.equal(r.fresh.length, 0);
    assert.deepEqual(r.history.counts, {});
  });

  test('the recent-drift list is bounded', () => {
    let h = EMPTY_HISTORY;
    for (let i = 0; i < 30; i++) h = recordPass(h, [missing], true, `t${i}`, 10).history;
    assert.equal(h.recent.length, 10);
    assert.equal(h.recent.at(-1)?.at, 't29');
  });
});

describe('splitFirstInstall: on the first pass, a chain of ours that is not there at all is an install, not drift', () => {
  const C = config({ bootScript: 'always' });
  const WANT = desiredOf(C);
  const kinds = (fs: readonly Finding[]) => fs.map((f) => `${f.kind} ${f.family ?? '-'} ${f.chain ?? '-'}`);

  test('a host with nothing of ours: every chain, jump, rule and the boot script are install; nothing is drift', () => {
    const p = planReconcile(WANT, observation({ ipv4: readable(freshSave()), ipv6: readable(freshSave()) }, { bootScript: { dirExists: true, file: null } }), policyOf(C));
    const { drift, install } = splitFirstInstall(p.findings);
    assert.deepEqual(drift.filter((f) => f.status === 'fail'), []);
    assert.ok(install.some((f) => f.kind === 'boot-script-missing'));
    assert.equal(install.filter((f) => f.kind === 'chain-missing').length, 4, 'nat and FORWARD chains of both families');
  });

  test('a half-installed host: the missing chain is install, a rule gone from a chain that is there is drift, and so is the missing boot script', () => {
    // IPv4: the nat chain is there but flushed; the FORWARD chain never was. IPv6: all in place.
    const nat = [':IMDS-GUARD - [0:0]', protectedLines(WANT.ipv4, 'nat')[1]!];
    const ipv4 = readable(parseSave(section('nat', nat) + section('filter', [])));
    const p = planReconcile(WANT, observation({ ipv4, ipv6: readable(protectedSave(WANT.ipv6)) }, { bootScript: { dirExists: true, file: null } }), policyOf(C));
    const { drift, install } = splitFirstInstall(p.findings);
    assert.deepEqual(kinds(drift.filter((f) => f.status === 'fail')), ['rule-missing ipv4 IMDS-GUARD', 'boot-script-missing - -']);
    assert.deepEqual(kinds(install), ['chain-missing ipv4 IMDS-GUARD-FWD', 'jump-missing ipv4 IMDS-GUARD-FWD', 'rule-missing ipv4 IMDS-GUARD-FWD']);
  });

  test('a chain that is there with its jump deleted is drift', () => {
    const filter = protectedLines(WANT.ipv4, 'filter').filter((l) => !l.startsWith('-A FORWARD'));
    const ipv4 = readable(parseSave(section('nat', protectedLines(WANT.ipv4, 'nat')) + section('filter', filter)));
    const p = planReconcile(WANT, observation({ ipv4, ipv6: readable(protectedSave(WANT.ipv6)) }), policyOf(config()));
    assert.deepEqual(kinds(splitFirstInstall(p.findings).drift.filter((f) => f.status === 'fail')), ['jump-missing ipv4 IMDS-GUARD-FWD', 'unprotected ipv4 IMDS-GUARD-FWD']);
  });

  test('after a boot, the parent rule restored without an inode is install: the first pass only records the new inode', () => {
    const parent = toCgroupPath('/docker')!;
    const booted = desiredOf(C, { ipv4: bootHostNetRules('ipv4', C.endpoints, parent), ipv6: bootHostNetRules('ipv6', C.endpoints, parent) });
    const obs = { containers: [], parent: { path: parent, inode: 310 }, inodes: new Map(), unavailable: null };
    const want = desiredOf(C, { ipv4: hostNetRules('ipv4', C.endpoints, obs), ipv6: hostNetRules('ipv6', C.endpoints, obs) });
    const p = planReconcile(want, observation({ ipv4: readable(protectedSave(booted.ipv4)), ipv6: readable(protectedSave(booted.ipv6)) }), policyOf(config()));
    const { drift, install } = splitFirstInstall(p.findings);
    assert.deepEqual(kinds(install.filter((f) => f.kind === 'cgroup-stale')), ['cgroup-stale ipv4 IMDS-GUARD-OUT', 'cgroup-stale ipv6 IMDS-GUARD-OUT']);
    assert.deepEqual(drift.filter((f) => f.kind === 'cgroup-stale'), []);
    assert.equal(p.transactions.length, 2, 'and the chains are rewritten with the inode');
  });

  test('our chains found in the other backend do not make the host look installed, nor count as a fresh chain', () => {
    const p = planReconcile(WANT, observation({ ipv4: readable(freshSave(), protectedSave(WANT.ipv4)), ipv6: readable(freshSave()) }, { bootScript: { dirExists: true, file: null } }), policyOf(C));
    const { drift, install } = splitFirstInstall(p.findings);
    assert.deepEqual(kinds(drift.filter((f) => f.status === 'fail')), ['other-backend ipv4 -', 'other-backend ipv4 -'], 'leftovers in the other backend stay drift');
    assert.ok(install.some((f) => f.kind === 'boot-script-missing'), 'the backend Docker uses holds nothing: still a first install');
  });
});
