import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { before, test } from 'node:test';
import { renderBootScript } from '../../src/core/boot-script.js';
import { resolveConfig } from '../../src/core/config.js';
import { desiredFamily } from '../../src/core/desired.js';
import { REPO, ensureBuilt, freshHost, runCli } from '../helpers/cli.js';
import type { Netns } from '../helpers/netns.js';

/**
 * The ipset side against the real ipset tool and kernel, in a throwaway namespace
 * (sets live per network namespace, like the nat table): the boot script with
 * custom-named bridges in the set, its fallback without the tool, the adapter's
 * repairs, and remove.
 */
before(() => ensureBuilt());

const config = resolveConfig([{ source: 'test', values: { backend: 'nft' } }]);
const STATIC = ['docker0', 'docker_gwbridge', 'br-+'];
const CUSTOM = ['mynet0', 'lab-custom'];
const SET_RULE = /^-A IMDS-GUARD -d 169\.254\.169\.254\/32 -p tcp -m tcp --dport 80 -m set --match-set imds-guard-4 src,src -m comment --comment "imds-guard:[0-9a-f]{12}" -j REDIRECT --to-ports 1$/m;

function bootScriptWithSet(path: string): void {
  writeFileSync(path, renderBootScript('nft', [desiredFamily(config, 'ipv4', STATIC, CUSTOM), desiredFamily(config, 'ipv6', STATIC, CUSTOM)]), { mode: 0o755 });
}

function ipsetSave(ns: Netns, name: string): string {
  const r = ns.run('ipset', ['save', name]);
  return r.code === 0 ? r.stdout : '';
}

test('the boot script creates the set with its members before the rule naming it; run three times, nothing is doubled', (t) => {
  const { ns, host } = freshHost(t, 'ipset');
  bootScriptWithSet(host.bootScript);
  for (let run = 1; run <= 3; run++) {
    const r = ns.run('sh', [host.bootScript]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
  }
  const set4 = ipsetSave(ns, 'imds-guard-4');
  assert.match(set4, /^create imds-guard-4 hash:net,iface family inet /m);
  assert.deepEqual(set4.split('\n').filter((l) => l.startsWith('add ')).sort(), ['add imds-guard-4 0.0.0.0/0,lab-custom', 'add imds-guard-4 0.0.0.0/0,mynet0']);
  assert.match(ipsetSave(ns, 'imds-guard-6'), /^add imds-guard-6 ::\/0,mynet0$/m);
  const v4 = ns.natRules('ipv4', 'nft');
  assert.equal(v4.filter((l) => SET_RULE.test(l)).length, 1);
  assert.equal(v4.filter((l) => l.includes('-i mynet0')).length, 0, 'a custom bridge got a rule of its own next to its member');
});

test('shellcheck finds nothing in the boot script with a set and its fallback', { skip: spawnSync('shellcheck', ['--version']).status !== 0 && 'shellcheck is not installed' }, (t) => {
  const { host } = freshHost(t, 'ipset');
  bootScriptWithSet(host.bootScript);
  const r = spawnSync('shellcheck', ['-s', 'sh', host.bootScript], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout);
});

test('without the ipset tool the boot script gives each custom bridge rules of its own, and creates no set', (t) => {
  const { ns, host } = freshHost(t, 'ipset');
  bootScriptWithSet(host.bootScript);
  // A PATH with iptables and the shell tools the script uses, but no ipset.
  const bin = join(host.root, 'bin-no-ipset');
  mkdirSync(bin);
  for (const tool of ['iptables-nft-save', 'iptables-nft-restore', 'ip6tables-nft-save', 'ip6tables-nft-restore', 'xtables-nft-multi']) symlinkSync(`/usr/sbin/${tool}`, join(bin, tool));
  for (const tool of ['cat', 'sed']) symlinkSync(`/usr/bin/${tool}`, join(bin, tool));
  const r = ns.run('/usr/bin/env', [`PATH=${bin}`, '/bin/sh', host.bootScript]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(ipsetSave(ns, 'imds-guard-4'), '');
  const v4 = ns.natRules('ipv4', 'nft');
  assert.equal(v4.filter((l) => SET_RULE.test(l)).length, 0);
  for (const iface of CUSTOM) assert.equal(v4.filter((l) => l.includes(` -i ${iface} `)).length, 1, iface);
});

/** Runs the real ipset adapter and the set comparison inside the namespace: observe, compare, restore, observe again. */
const REPAIR_SCRIPT = `
import { compareSet, desiredSet, parseIpsetSave } from ${JSON.stringify(pathToFileURL(join(REPO, 'src/core/ipset.ts')).href)};
import { createIpset } from ${JSON.stringify(pathToFileURL(join(REPO, 'src/shell/ipset.ts')).href)};
import { runProcess } from ${JSON.stringify(pathToFileURL(join(REPO, 'src/shell/exec.ts')).href)};
const ipset = createIpset(runProcess);
const read = async () => {
  const r = await ipset.save('imds-guard-4');
  return r.available && r.text !== null ? parseIpsetSave(r.text).get('imds-guard-4') ?? null : null;
};
const cmp = compareSet(desiredSet('ipv4', JSON.parse(process.argv[2])), await read());
if (cmp.payload !== null) await ipset.restore(cmp.payload);
const after = compareSet(desiredSet('ipv4', JSON.parse(process.argv[2])), await read());
console.log(JSON.stringify({ kinds: cmp.findings.map((f) => f.kind), wrote: cmp.payload !== null, converged: after.payload === null && after.findings.length === 0 }));
`;

test('the adapter repairs a missing set, a foreign member, a missing member and a set of the wrong type with one ipset restore each', (t) => {
  const { ns, host } = freshHost(t, 'ipset');
  const script = join(host.root, 'repair.mts');
  writeFileSync(script, REPAIR_SCRIPT);
  const repair = (members: readonly string[]): { kinds: string[]; wrote: boolean; converged: boolean } => {
    const r = ns.run(process.execPath, ['--import', 'tsx', script, JSON.stringify(members)], { cwd: REPO });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { kinds: string[]; wrote: boolean; converged: boolean };
  };
  assert.deepEqual(repair(CUSTOM), { kinds: ['set-missing'], wrote: true, converged: true });
  assert.deepEqual(repair(CUSTOM), { kinds: [], wrote: false, converged: true }, 'a converged set is not written');
  ns.check('ipset', ['add', 'imds-guard-4', '0.0.0.0/0,eth9']);
  ns.check('ipset', ['del', 'imds-guard-4', '0.0.0.0/0,mynet0']);
  assert.deepEqual(repair(CUSTOM), { kinds: ['set-member-unknown'], wrote: true, converged: true });
  ns.check('ipset', ['destroy', 'imds-guard-4']);
  ns.check('ipset', ['create', 'imds-guard-4', 'hash:ip']);
  assert.deepEqual(repair(CUSTOM), { kinds: ['set-altered'], wrote: true, converged: true });
  assert.deepEqual(ipsetSave(ns, 'imds-guard-4').split('\n').filter((l) => l.startsWith('add ')).sort(), ['add imds-guard-4 0.0.0.0/0,lab-custom', 'add imds-guard-4 0.0.0.0/0,mynet0']);
});

test('remove deletes the rules naming the sets, then the sets, and leaves the namespace as it was', (t) => {
  const { ns, host } = freshHost(t, 'ipset');
  const before = ns.saveNat('ipv4', 'nft');
  bootScriptWithSet(host.bootScript);
  assert.equal(ns.run('sh', [host.bootScript]).code, 0);
  ns.check('ipset', ['create', 'someone-else', 'hash:ip']);
  const r = runCli(ns, host, ['remove', ...host.args]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /2 ipset\(s\) destroyed/);
  assert.equal(ns.saveNat('ipv4', 'nft'), before);
  assert.deepEqual(ns.check('ipset', ['list', '-n']).trim().split('\n'), ['someone-else'], 'a set that is not ours was touched');
});
