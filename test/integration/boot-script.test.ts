import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { JUMP_LINE, ensureBuilt, fixture, freshHost, runCli } from '../helpers/cli.js';
import { type Backend, type Netns, createNetns } from '../helpers/netns.js';

before(() => ensureBuilt());

const FAMILIES = ['ipv4', 'ipv6'] as const;

/** The local.d script as OpenRC runs it: `sh FILE`, with the real iptables on PATH. */
function runBootScript(ns: Netns, script: string): void {
  const r = ns.run('sh', [script]);
  assert.equal(r.code, 0, `boot script failed: ${r.stderr}`);
  assert.equal(r.stderr, '');
}

for (const backend of ['nft', 'legacy'] as const satisfies readonly Backend[]) {
  describe(`the local.d boot script written for --backend ${backend}`, () => {
    test('run in a fresh namespace, it installs exactly the rules apply installed; run three times it still leaves one jump and one copy of each rule', (t) => {
      const { ns, host } = freshHost(t, 'boot');
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      const script = readFileSync(host.bootScript, 'utf8');
      assert.match(script, new RegExp(`ig_pick iptables-${backend}-save iptables-save`));

      const boot = createNetns('boot');
      t.after(() => boot.destroy());
      for (let run = 1; run <= 3; run++) {
        runBootScript(boot, host.bootScript);
        for (const family of FAMILIES) {
          assert.equal(boot.saveNat(family, backend), ns.saveNat(family, backend), `${family} after run ${run}`);
        }
      }
      assert.equal(boot.natRules('ipv4', backend).filter((l) => l === JUMP_LINE).length, 1);
    });

    test('after the jump is deleted and an ACCEPT is put in its place, running it again restores protection on top', (t) => {
      const { ns, host } = freshHost(t, 'boot');
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      const protectedV4 = ns.saveNat('ipv4', backend);

      const boot = createNetns('boot');
      t.after(() => boot.destroy());
      runBootScript(boot, host.bootScript);
      boot.nat('ipv4', backend, ['-D', 'PREROUTING', '1']);
      boot.nat('ipv4', backend, ['-I', 'PREROUTING', '1', '-p', 'tcp', '-d', '169.254.169.254', '-j', 'ACCEPT']);
      boot.nat('ipv4', backend, ['-F', 'IMDS-GUARD']);

      runBootScript(boot, host.bootScript);
      assert.equal(boot.saveNat('ipv4', backend), protectedV4.replace(`${JUMP_LINE}\n`, `${JUMP_LINE}\n-A PREROUTING -d 169.254.169.254/32 -p tcp -j ACCEPT\n`));

      // and the CLI agrees: what the script restored is not drift
      const audit = runCli(boot, host, ['audit', '--backend', backend, ...host.args]);
      assert.equal(audit.code, 0, audit.stdout);
    });
  });
}

test('at boot after Docker has written its rules, the script adds ours on top and leaves every Docker rule in place', (t) => {
  const { ns, host } = freshHost(t, 'boot');
  assert.equal(runCli(ns, host, ['apply', '--backend', 'nft', ...host.args]).code, 0);
  const ours = ns.natRules('ipv4', 'nft');

  const boot = createNetns('boot');
  t.after(() => boot.destroy());
  const save = fixture('docker-20.10-swarm.nft.save');
  const start = save.indexOf('*nat\n');
  boot.restore('ipv4', 'nft', `${save.slice(start, save.indexOf('COMMIT\n', start))}COMMIT\n`);
  const docker = boot.natRules('ipv4', 'nft');

  runBootScript(boot, host.bootScript);
  const after = boot.natRules('ipv4', 'nft');
  assert.equal(after[0], JUMP_LINE);
  assert.deepEqual(after.filter((l) => !ours.includes(l)), docker);
  assert.deepEqual(after.filter((l) => ours.includes(l)), ours);
});
