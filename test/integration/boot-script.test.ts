import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { FWD_JUMP_LINE, JUMP_LINE, OUT_JUMP_LINE, ensureBuilt, fixture, freshHost, ipt, runCli, saveNatFilter, tableRules } from '../helpers/cli.js';
import { createTestCgroup } from '../helpers/cgroup.js';
import { type Backend, type Netns, createNetns } from '../helpers/netns.js';

before(() => ensureBuilt());

const FAMILIES = ['ipv4', 'ipv6'] as const;

/** The local.d script as OpenRC runs it: `sh FILE`, with the real iptables on PATH. */
function runBootScript(ns: Netns, script: string): void {
  const r = ns.run('sh', [script]);
  assert.equal(r.code, 0, `boot script failed: ${r.stderr}`);
  assert.equal(r.stderr, '');
}

/** shellcheck (installed by scripts/install-deps test) has nothing to say about it, as a POSIX sh script. */
function assertShellcheckClean(file: string): void {
  const r = spawnSync('shellcheck', ['--shell=sh', '--severity=style', file], { encoding: 'utf8' });
  if (r.error) throw new Error(`shellcheck could not run (scripts/install-deps test installs it): ${r.error.message}`);
  assert.equal(r.status, 0, r.stdout + r.stderr);
}

const count = (lines: readonly string[], line: string): number => lines.filter((l) => l === line).length;

for (const backend of ['nft', 'legacy'] as const satisfies readonly Backend[]) {
  describe(`the local.d boot script written for --backend ${backend}`, () => {
    test('it is shellcheck-clean; run in a fresh namespace it installs exactly the nat and FORWARD protection apply installed; run three times it still leaves one jump and one copy of each rule', (t) => {
      const { ns, host } = freshHost(t, 'boot');
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      assertShellcheckClean(host.bootScript);
      const script = readFileSync(host.bootScript, 'utf8');
      assert.match(script, new RegExp(`ig_pick iptables-${backend}-save iptables-save`));

      const boot = createNetns('boot');
      t.after(() => boot.destroy());
      for (let run = 1; run <= 3; run++) {
        runBootScript(boot, host.bootScript);
        for (const family of FAMILIES) assert.equal(saveNatFilter(boot, family, backend), saveNatFilter(ns, family, backend), `${family} after run ${run}`);
      }
      assert.equal(count(tableRules(boot, 'ipv4', backend, 'nat'), JUMP_LINE), 1);
      assert.equal(count(tableRules(boot, 'ipv6', backend, 'filter'), FWD_JUMP_LINE), 1);

      // What the script restored is what the CLI wants: not drift, nothing to write.
      const written = host.restores().length;
      const audit = runCli(boot, host, ['audit', '--backend', backend, ...host.args]);
      assert.equal(audit.code, 0, audit.stdout);
      assert.match(runCli(boot, host, ['apply', '--backend', backend, ...host.args]).stdout, /already protected; nothing written/);
      assert.equal(host.restores().length, written);
    });

    test('after the jumps are deleted, an ACCEPT is put in the nat jump\'s place and both chains are flushed, running it again restores protection on top', (t) => {
      const { ns, host } = freshHost(t, 'boot');
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      const protectedV4 = saveNatFilter(ns, 'ipv4', backend);

      const boot = createNetns('boot');
      t.after(() => boot.destroy());
      runBootScript(boot, host.bootScript);
      ipt(boot, 'ipv4', backend, 'nat', ['-D', 'PREROUTING', '1']);
      ipt(boot, 'ipv4', backend, 'nat', ['-I', 'PREROUTING', '1', '-p', 'tcp', '-d', '169.254.169.254', '-j', 'ACCEPT']);
      ipt(boot, 'ipv4', backend, 'nat', ['-F', 'IMDS-GUARD']);
      ipt(boot, 'ipv4', backend, 'filter', ['-D', 'FORWARD', '1']);
      ipt(boot, 'ipv4', backend, 'filter', ['-F', 'IMDS-GUARD-FWD']);

      runBootScript(boot, host.bootScript);
      assert.equal(saveNatFilter(boot, 'ipv4', backend), protectedV4.replace(`${JUMP_LINE}\n`, `${JUMP_LINE}\n-A PREROUTING -d 169.254.169.254/32 -p tcp -j ACCEPT\n`));
      const audit = runCli(boot, host, ['audit', '--backend', backend, ...host.args]);
      assert.equal(audit.code, 0, audit.stdout);
    });

    test('with a container parent cgroup it creates the cgroup first and restores the OUTPUT parent rule too; run three times, one copy', (t) => {
      const cg = createTestCgroup();
      t.after(() => cg.destroy());
      const { ns, host } = freshHost(t, 'boot');
      const args = ['--backend', backend, '--cgroup-parent', cg.path, ...host.baseArgs];
      assert.equal(runCli(ns, host, ['apply', ...args]).code, 0);
      assertShellcheckClean(host.bootScript);
      const applied = Object.fromEntries(FAMILIES.map((f) => [f, saveNatFilter(ns, f, backend)]));

      // At boot the cgroup does not exist yet (cgroupfs makes it with Docker's first container).
      rmdirSync(cg.dirOf(cg.child));
      rmdirSync(cg.dirOf(cg.path));
      const boot = createNetns('boot');
      t.after(() => boot.destroy());
      for (let run = 1; run <= 3; run++) {
        runBootScript(boot, host.bootScript);
        assert.ok(existsSync(cg.dirOf(cg.path)), 'the script makes the parent cgroup');
        for (const family of FAMILIES) {
          // The same tables, except that the boot rule's comment records no inode: cgroups
          // are made anew at every boot, and the agent's first pass records the new one.
          assert.equal(saveNatFilter(boot, family, backend), applied[family]!.replace(/ cgino=\d+"/g, '"'), `${family} after run ${run}`);
          const filter = tableRules(boot, family, backend, 'filter');
          assert.equal(count(filter, OUT_JUMP_LINE), 1);
          assert.equal(filter.filter((l) => l.startsWith('-A IMDS-GUARD-OUT ') && l.includes(`-m cgroup --path "${cg.path}"`) && l.endsWith('-j REJECT --reject-with tcp-reset')).length, 1);
        }
      }

      // The CLI sees a rule resolved against no recorded inode as stale and records the new one.
      const audit = runCli(boot, host, ['audit', '--format', 'json', ...args]);
      assert.equal(audit.code, 1);
      const written = host.restores().length;
      assert.equal(runCli(boot, host, ['apply', ...args]).code, 0);
      assert.deepEqual(host.restores().slice(written).map((x) => `${x.tool} ${x.payload.split('\n')[0]}`), [`iptables-${backend}-restore *filter`, `ip6tables-${backend}-restore *filter`]);
      assert.ok(tableRules(boot, 'ipv4', backend, 'filter').some((l) => l.includes(`cgino=${cg.inode(cg.path)}"`)));
    });

    test('imds-guard script prints the boot script apply writes, and writes nothing', (t) => {
      const cg = createTestCgroup();
      t.after(() => cg.destroy());
      for (const args of [['--backend', backend], ['--backend', backend, '--cgroup-parent', cg.path]]) {
        const { ns, host } = freshHost(t, 'boot');
        const flags = [...args, ...(args.includes('--cgroup-parent') ? host.baseArgs : host.args)];
        const printed = runCli(ns, host, ['script', ...flags]);
        assert.equal(printed.code, 0, printed.stderr);
        assert.deepEqual(host.restores(), []);
        assert.equal(existsSync(host.bootScript), false);
        assert.equal(runCli(ns, host, ['apply', ...flags]).code, 0);
        assert.equal(printed.stdout, readFileSync(host.bootScript, 'utf8'));
        assert.match(printed.stdout, /^#!\/bin\/sh\n/);
      }
    });
  });
}

test("at boot after Docker has written its rules, the script adds ours on top of nat PREROUTING and filter FORWARD and leaves every Docker rule in place", (t) => {
  const { ns, host } = freshHost(t, 'boot');
  assert.equal(runCli(ns, host, ['apply', '--backend', 'nft', ...host.args]).code, 0);
  const boot = createNetns('boot');
  t.after(() => boot.destroy());
  boot.restore('ipv4', 'nft', fixture('docker-20.10-swarm.nft.save'));

  const tables = ['nat', 'filter'] as const;
  const docker = tables.map((table) => tableRules(boot, 'ipv4', 'nft', table));
  runBootScript(boot, host.bootScript);
  tables.forEach((table, i) => {
    const ours = tableRules(ns, 'ipv4', 'nft', table);
    const after = tableRules(boot, 'ipv4', 'nft', table);
    assert.equal(after[0], table === 'nat' ? JUMP_LINE : FWD_JUMP_LINE);
    assert.deepEqual(after.filter((l) => !ours.includes(l)), docker[i]);
    assert.deepEqual(after.filter((l) => ours.includes(l)), ours);
  });
});
