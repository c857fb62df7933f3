// The OpenRC service under a real OpenRC: a Debian root with OpenRC (built once by
// scripts/openrc-rootfs), booted by /sbin/openrc-init as PID 1 of fresh pid, mount
// and network namespaces (test/packaging/openrc-ns.sh). Nothing reaches this
// machine's own network namespace or mount table.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireCapabilities, skipWithout } from '../helpers/capability.js';
import { BUILT_AGENT, BootedSystem, REPO, ROOT, buildTestRoot, commands, run, theAgent } from './helpers.js';

const SERVICE = join(REPO, 'openrc/imds-guard');
const CONFD = join(REPO, 'openrc/imds-guard.confd');
const CONFIG = '/etc/imds-guard/config.yaml';
const LOG = '/var/log/imds-guard.log';
// supervise-daemon's respawn_delay (5 s) plus node's start-up, with room to spare.
const RESPAWN_WAIT_MS = 20_000;

const shellcheck = commands('shellcheck');
test('shellcheck finds nothing in the service script, its conf.d, and the shell scripts of these tests', { skip: skipWithout(...shellcheck) }, () => {
  requireCapabilities(...shellcheck);
  const here = join(REPO, 'test/packaging');
  const sh = [SERVICE, CONFD, ...['fixtures/docker.initd', 'fixtures/local.initd', 'ns-lib.sh', 'openrc-ns.sh', 'systemd-ns.sh'].map((f) => join(here, f))];
  for (const args of [['-x', '-s', 'sh', ...sh], ['-x', join(REPO, 'scripts/openrc-rootfs')]]) {
    const r = run('shellcheck', args);
    assert.equal(r.stdout + r.stderr, '');
    assert.equal(r.status, 0);
  }
});

const needs = [ROOT, ...commands('unshare', 'nsenter', 'chroot'), BUILT_AGENT];

describe('OpenRC service under openrc-init', { skip: skipWithout(...needs), timeout: 20 * 60_000 }, () => {
  let base = '';
  let agent = { path: '', label: '' };
  let sys: BootedSystem | undefined;
  // The second boot, of what the first left behind (the boot script the agent wrote).
  let again: BootedSystem | undefined;
  const os = (): BootedSystem => {
    assert.ok(sys, 'the system did not boot');
    return sys;
  };
  // Each reader fails when its command does: a failed spawn must not read as 0 on both
  // sides of a comparison.
  const childPid = (): number => {
    const pid = Number(os().sh('cat /run/openrc/options/imds-guard/child_pid').stdout.trim());
    assert.ok(Number.isInteger(pid) && pid > 1, `supervise-daemon names no agent process (child_pid ${pid})`);
    return pid;
  };
  const alive = (pid: number): boolean => pid > 0 && os().sh(`kill -0 ${pid}`).status === 0;
  const events = (name: string): number => {
    // grep -c: exit 1 is "none" (count 0), 2 an error (no log).
    const r = os().sh(`grep -c '"event":"${name}"' ${LOG}`);
    assert.ok(r.status === 0 || r.status === 1, `cannot read ${LOG}: ${r.stderr}`);
    return Number(r.stdout.trim());
  };
  const status = (): number | null => os().sh('rc-service imds-guard status').status;

  before(async () => {
    requireCapabilities(...needs);
    agent = theAgent();
    base = buildTestRoot();
    process.stdout.write(`# OpenRC test runs ${agent.label}\n`);
    sys = await BootedSystem.boot('unshare', ['--net', '--pid', '--mount', '--fork', '--kill-child'], 'openrc-ns.sh', base, agent.path);
    // docker is the last service of the default runlevel (it comes after imds-guard).
    await os().waitFor('the default runlevel', () => os().sh('rc-service docker status').status === 0, 90_000);
  });

  after(async () => {
    await again?.destroy();
    await sys?.destroy();
  });

  test('openrc-init boots the default runlevel with imds-guard started', () => {
    const r = os().sh('rc-status default');
    assert.match(r.stdout, /imds-guard\s+\[\s*started/, r.stdout);
    assert.equal(status(), 0);
    assert.match(os().console, /Checking the imds-guard configuration \.\.\. \[ ok \]/);
  });

  test('docker starts only once imds-guard is started and the host is already protected', () => {
    const saw = os().sh('cat /run/docker-saw').stdout;
    assert.match(saw, /^imds-guard=started$/m, saw);
    assert.match(saw, /^protected=yes$/m, saw);
  });

  test('the agent runs as `imds-guard run` under supervise-daemon and logs to /var/log/imds-guard.log', async () => {
    const pid = childPid();
    assert.ok(alive(pid));
    const args = os().sh(`tr '\\0' ' ' </proc/${pid}/cmdline`).stdout;
    // /usr/local/bin/imds-guard, npm's bin link to dist/imds-guard, exec's node dist/cli.js for
    // `run`, with the agent's V8 setting on the command line (no NODE_OPTIONS in the service).
    assert.match(args, /^\/usr\/local\/bin\/node --max-semi-space-size=1 \/opt\/imds-guard\/dist\/cli\.js run\b/);
    const parent = os().sh(`ps -o args= -p $(ps -o ppid= -p ${pid})`).stdout;
    assert.match(parent, /^supervise-daemon imds-guard --start /);
    await os().waitFor('the "started" log line', () => events('started') >= 1, 10_000);
  });

  test('supervise-daemon respawns a killed agent', async () => {
    const old = childPid();
    assert.equal(os().sh(`kill -KILL ${old}`).status, 0);
    await os().waitFor('a new agent process', () => {
      const pid = Number(os().sh('cat /run/openrc/options/imds-guard/child_pid').stdout.trim());
      return pid > 1 && pid !== old && alive(pid);
    }, RESPAWN_WAIT_MS);
    assert.ok(!alive(old));
    assert.equal(status(), 0);
  });

  test('reload checks the configuration and sends SIGHUP; the agent reloads without restarting', async () => {
    const pid = childPid();
    const before = events('reloaded');
    const r = os().sh('rc-service imds-guard reload');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    await os().waitFor('the "reloaded" log line', () => events('reloaded') === before + 1, 10_000);
    assert.equal(childPid(), pid);
  });

  test('reload refuses an invalid configuration and the agent keeps running', () => {
    const pid = childPid();
    const before = events('reloaded');
    os().sh(`cp -p ${CONFIG} ${CONFIG}.good 2>/dev/null; printf 'mode: invalid\\n' >${CONFIG}`);
    try {
      const r = os().sh('rc-service imds-guard reload');
      assert.notEqual(r.status, 0, 'reload accepted an invalid configuration');
      assert.equal(events('reloaded'), before);
      assert.equal(childPid(), pid);
      assert.ok(alive(pid));
    } finally {
      os().sh(`if [ -e ${CONFIG}.good ]; then mv ${CONFIG}.good ${CONFIG}; else rm -f ${CONFIG}; fi`);
    }
  });

  test('stop ends the agent with SIGTERM within seconds and leaves the protection in place', () => {
    const pid = childPid();
    const supervisor = Number(os().sh(`ps -o ppid= -p ${pid}`).stdout.trim());
    assert.ok(supervisor > 1, `no supervise-daemon above the agent (ppid ${supervisor})`);
    const t0 = Date.now();
    const r = os().sh('rc-service imds-guard stop');
    const took = Date.now() - t0;
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.ok(took < 5_000, `stop took ${took} ms`);
    assert.ok(!alive(pid), 'the agent survived stop');
    assert.ok(!alive(supervisor), 'supervise-daemon survived stop');
    assert.equal(status(), 3); // OpenRC: stopped
    assert.match(os().sh(`tail -n 1 ${LOG}`).stdout, /"event":"stopping"/);
    assert.equal(os().sh('imds-guard audit').status, 0, 'the rules went away with the agent');
  });

  test('start refuses an invalid configuration, then starts once it is fixed', () => {
    os().sh(`cp -p ${CONFIG} ${CONFIG}.good 2>/dev/null; printf 'mode: invalid\\n' >${CONFIG}`);
    try {
      const r = os().sh('rc-service imds-guard start');
      assert.notEqual(r.status, 0, 'started with an invalid configuration');
      assert.equal(status(), 3);
    } finally {
      os().sh(`if [ -e ${CONFIG}.good ]; then mv ${CONFIG}.good ${CONFIG}; else rm -f ${CONFIG}; fi`);
    }
    const r = os().sh('rc-service imds-guard start');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(status(), 0);
  });

  test('shutdown stops the service and ends every process of the system', async () => {
    const s = os();
    const ended = await s.powerOff('openrc-shutdown --poweroff now', 30_000);
    assert.notEqual(ended, 'timeout', `openrc-init did not power off:\n${s.console}`);
    assert.match(s.console.slice(s.console.lastIndexOf('Starting imds-guard')), /Stopping imds-guard \.\.\. \[ ok \]/);
    assert.throws(() => process.kill(s.hostPid, 0), 'PID 1 of the test system survived');
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
    assert.ok(!mounts.includes(s.work), 'a mount of the test system is visible on this machine');
  });

  test('OpenRC actually runs local.d at boot: booted again with only docker and local, the boot script the agent wrote installs the protection, after docker', async () => {
    // The first system wrote its boot script into the overlay (start_pre's apply and the
    // agent) and is powered off (the test above). Boot the same files again with the
    // service out of the runlevel: what protects the host now is local.d alone.
    const first = os();
    await first.destroy({ keepWork: true });
    const script = join(first.work, 'upper/etc/local.d/imds-guard.start');
    assert.ok(existsSync(script), 'the agent wrote no /etc/local.d/imds-guard.start');
    const text = readFileSync(script, 'utf8');
    const backend = /Written by imds-guard for the (nft|legacy) iptables backend/.exec(text)?.[1];
    assert.ok(backend !== undefined, `not the agent's boot script:\n${text}`);
    again = await BootedSystem.boot('unshare', ['--net', '--pid', '--mount', '--fork', '--kill-child'], 'openrc-ns.sh', base, agent.path, { work: first.work, extra: ['docker local'] });
    const s = again;
    await s.waitFor('the local service', () => s.sh('rc-service local status').status === 0, 90_000);
    assert.match(s.console, /Executing "\/etc\/local\.d\/imds-guard\.start"/);
    assert.doesNotMatch(s.console, /imds-guard\.start" failed|could not restore/, s.console);
    assert.equal(s.sh('rc-service imds-guard status').status, 3, 'the imds-guard service ran: this boot would not prove local.d');
    // `after *`, as docs/services.md says: docker started before the boot script ran.
    assert.match(s.sh('cat /run/docker-saw').stdout, /^protected=no$/m);

    const report = JSON.parse(s.sh('imds-guard audit --format json').stdout) as { protected: boolean; endpoints: { list: string[] } };
    assert.equal(report.protected, true);
    assert.ok(report.endpoints.list.length >= 1, 'no endpoint to check');
    for (const ep of report.endpoints.list) {
      // 169.254.169.254:80 or [fd00:ec2::254]:80
      const m = /^(?:\[([0-9a-f:]+)\]|([0-9.]+)):(\d+)$/.exec(ep);
      assert.ok(m?.[3] !== undefined, `endpoint ${ep}`);
      const v6 = m[1] !== undefined;
      const saved = s.sh(`${v6 ? 'ip6tables' : 'iptables'}-${backend}-save`).stdout;
      const dest = `-d ${(m[1] ?? m[2] ?? '').replace(/[.]/g, '\\.')}/${v6 ? 128 : 32} -p tcp -m tcp --dport ${m[3]} `;
      assert.match(saved, /^-A PREROUTING .*-j IMDS-GUARD$/m, `${ep}: no nat jump\n${saved}`);
      assert.match(saved, new RegExp(`^-A IMDS-GUARD ${dest}.*-j REDIRECT --to-ports 1$`, 'm'), `${ep}: no nat catch-all\n${saved}`);
      assert.match(saved, /^-A FORWARD .*-j IMDS-GUARD-FWD$/m, `${ep}: no backstop jump\n${saved}`);
      assert.match(saved, new RegExp(`^-A IMDS-GUARD-FWD ${dest}.*-j REJECT --reject-with tcp-reset$`, 'm'), `${ep}: no backstop\n${saved}`);
    }
    const audit = s.sh('imds-guard audit');
    assert.equal(audit.status, 0, audit.stdout + audit.stderr);
    assert.match(audit.stdout, /OpenRC's local service is enabled/);
  });
});
