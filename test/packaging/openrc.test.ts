// The OpenRC service under a real OpenRC: a Debian root with OpenRC (built once by
// scripts/openrc-rootfs), booted by /sbin/openrc-init as PID 1 of fresh pid, mount
// and network namespaces (test/packaging/openrc-ns.sh). Nothing reaches this
// machine's own network namespace or mount table.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BootedSystem, REPO, agentUnderTest, buildTestRoot, commandExists, run } from './helpers.js';

const SERVICE = join(REPO, 'openrc/imds-guard');
const CONFD = join(REPO, 'openrc/imds-guard.confd');
const CONFIG = '/etc/imds-guard/config.yaml';
const LOG = '/var/log/imds-guard.log';
// supervise-daemon's respawn_delay (5 s) plus node's start-up, with room to spare.
const RESPAWN_WAIT_MS = 20_000;

test('shellcheck finds nothing in the service script, its conf.d, and the shell scripts of these tests', { skip: !commandExists('shellcheck') && 'shellcheck is not installed' }, () => {
  const here = join(REPO, 'test/packaging');
  const sh = [SERVICE, CONFD, ...['fixtures/docker.initd', 'ns-lib.sh', 'openrc-ns.sh', 'systemd-ns.sh'].map((f) => join(here, f))];
  for (const args of [['-x', '-s', 'sh', ...sh], ['-x', join(REPO, 'scripts/openrc-rootfs')]]) {
    const r = run('shellcheck', args);
    assert.equal(r.stdout + r.stderr, '');
    assert.equal(r.status, 0);
  }
});

const needs = ['unshare', 'nsenter', 'chroot'].filter((c) => !commandExists(c));
const skip = process.getuid?.() !== 0 ? 'needs root (namespaces, chroot, debootstrap)' : needs.length > 0 ? `missing ${needs.join(', ')} (scripts/install-deps test)` : false;

describe('OpenRC service under openrc-init', { skip, timeout: 20 * 60_000 }, () => {
  const agent = agentUnderTest();
  let sys: BootedSystem | undefined;
  const os = (): BootedSystem => {
    assert.ok(sys, 'the system did not boot');
    return sys;
  };
  const childPid = (): number => Number(os().sh('cat /run/openrc/options/imds-guard/child_pid').stdout.trim());
  const alive = (pid: number): boolean => pid > 0 && os().sh(`kill -0 ${pid}`).status === 0;
  const events = (name: string): number => os().sh(`grep -c '"event":"${name}"' ${LOG}`).stdout.trim().split('\n').map(Number)[0] ?? 0;
  const status = (): number | null => os().sh('rc-service imds-guard status').status;

  before(async () => {
    const base = buildTestRoot();
    process.stdout.write(`# OpenRC test runs ${agent.label}\n`);
    sys = await BootedSystem.boot('unshare', ['--net', '--pid', '--mount', '--fork', '--kill-child'], 'openrc-ns.sh', base, agent.path);
    // docker is the last service of the default runlevel (it comes after imds-guard).
    await os().waitFor('the default runlevel', () => os().sh('rc-service docker status').status === 0, 90_000);
  });

  after(async () => {
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
    assert.match(args, /\/usr\/local\/bin\/imds-guard run\b/);
    const parent = os().sh(`ps -o args= -p $(ps -o ppid= -p ${pid})`).stdout;
    assert.match(parent, /^supervise-daemon imds-guard --start /);
    await os().waitFor('the "started" log line', () => events('started') >= 1, 10_000);
  });

  test('supervise-daemon respawns a killed agent', async () => {
    const old = childPid();
    assert.equal(os().sh(`kill -KILL ${old}`).status, 0);
    await os().waitFor('a new agent process', () => {
      const pid = childPid();
      return pid !== old && alive(pid);
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
});
