// The systemd unit, checked offline: this machine's PID 1 is not systemd, but
// systemd-analyze can load a unit against an alternate root and score its sandbox.
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { REPO, commandExists, run } from './helpers.js';

const UNIT = join(REPO, 'systemd/imds-guard.service');
const MAX_EXPOSURE = 2.5;
// Where the host keeps systemd's own units (sysinit.target and the rest the unit's
// default dependencies name); merged-/usr and split layouts.
const SYSTEM_UNITS = ['/usr/lib/systemd/system', '/lib/systemd/system'].find((d) => existsSync(join(d, 'sysinit.target')));
const skip = !commandExists('systemd-analyze') ? 'systemd-analyze is not installed (scripts/install-deps test)' : SYSTEM_UNITS === undefined ? "systemd's units are not installed" : false;

/**
 * `systemd-analyze verify --root=TREE`: TREE holds systemd's units, the unit under test
 * and an executable stub at the ExecStart path (verify insists that it exists).
 * Anything verify prints is a complaint: it exits 0 on unknown keys.
 */
function verify(root: string, unitText: string): { status: number | null; output: string } {
  writeFileSync(join(root, 'etc/systemd/system/imds-guard.service'), unitText);
  const r = run('systemd-analyze', ['verify', `--root=${root}`, '--man=no', '--generators=no', 'imds-guard.service']);
  return { status: r.status, output: (r.stdout + r.stderr).trim() };
}

describe('systemd unit', { skip }, () => {
  let root = '';
  const unitText = readFileSync(UNIT, 'utf8');

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'imds-guard-systemd-'));
    mkdirSync(join(root, 'etc/systemd/system'), { recursive: true });
    mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
    cpSync(SYSTEM_UNITS ?? '', join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
    writeFileSync(join(root, 'usr/local/bin/imds-guard'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test('systemd-analyze verify loads the unit without a complaint', () => {
    const r = verify(root, unitText);
    assert.equal(r.output, '', `systemd-analyze verify said:\n${r.output}`);
    assert.equal(r.status, 0);
  });

  test('the verify check is not blind: a misspelled key and a missing ExecStart binary are reported', () => {
    const broken = unitText.replace(/^ProtectSystem=/m, 'ProtectSystm=').replace(/^ExecStart=\S+/m, 'ExecStart=/usr/local/bin/imds-guard-missing');
    const r = verify(root, broken);
    assert.match(r.output, /Unknown key 'ProtectSystm'/);
    assert.match(r.output, /imds-guard-missing is not executable/);
    assert.notEqual(r.status, 0);
  });

  test(`the sandbox exposure score is at most ${MAX_EXPOSURE}`, (t) => {
    const r = run('systemd-analyze', ['security', '--offline=yes', '--no-pager', UNIT]);
    const out = r.stdout + r.stderr;
    const m = /Overall exposure level for imds-guard\.service: (\d+(?:\.\d+)?)/.exec(out);
    assert.ok(m?.[1] !== undefined, `no exposure score in:\n${out}`);
    const score = Number(m[1]);
    t.diagnostic(`exposure score ${score} (limit ${MAX_EXPOSURE})`);
    process.stdout.write(`systemd-analyze security: imds-guard.service exposure ${score}\n`);
    assert.ok(score <= MAX_EXPOSURE, `exposure ${score} > ${MAX_EXPOSURE}:\n${out}`);
  });

  test('the helpers the unit runs besides the agent exist at the paths it names', () => {
    const paths = [...unitText.matchAll(/^Exec\w+=[-+!@:]*(\/\S+)/gm)].map((m) => m[1] ?? '').filter((p) => p !== '/usr/local/bin/imds-guard');
    assert.ok(paths.length > 0);
    for (const p of paths) assert.ok(existsSync(p), `${p} does not exist on this host`);
  });

  test('settings the agent cannot live with stay off', () => {
    // V8's JIT needs W+X pages; capabilities in a user namespace do not reach the
    // host's netfilter; the rules live in the host's network namespace; /proc/net
    // tells whether the legacy nat table is loaded.
    for (const key of ['MemoryDenyWriteExecute', 'PrivateUsers', 'PrivateNetwork', 'ProcSubset', 'DynamicUser']) {
      assert.doesNotMatch(unitText, new RegExp(`^${key}=`, 'm'), `${key}= is set`);
    }
    assert.match(unitText, /^CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW$/m);
    assert.match(unitText, /^Before=.*\bdocker\.service\b/m);
  });
});
