// The systemd unit, checked two ways. Offline: systemd-analyze loads the unit against
// an alternate root and scores its sandbox. For real: this machine's PID 1 is not
// systemd, so systemd is booted as PID 1 of throwaway namespaces in a Debian root
// (scripts/openrc-rootfs, test/packaging/systemd-ns.sh) and runs the unit there.
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { capability, requireCapabilities, skipWithout } from '../helpers/capability.js';
import { BUILT_AGENT, BootedSystem, REPO, ROOT, buildTestRoot, commands, run, theAgent } from './helpers.js';

const UNIT = join(REPO, 'systemd/imds-guard.service');
// `systemd-analyze security` scores the unit 2.1 (systemd 252): 1.7 before the agent
// needed ProtectControlGroups=no (it creates Docker's parent cgroup) and ProtectProc=default
// (it reads container processes' /proc/PID/cgroup).
const MAX_EXPOSURE = 2.5;
// Where the host keeps systemd's own units (sysinit.target and the rest the unit's
// default dependencies name); merged-/usr and split layouts.
const SYSTEM_UNITS = ['/usr/lib/systemd/system', '/lib/systemd/system'].find((d) => existsSync(join(d, 'sysinit.target')));
const offlineNeeds = [...commands('systemd-analyze'), capability("systemd's units", SYSTEM_UNITS !== undefined, 'no sysinit.target under /usr/lib/systemd/system or /lib/systemd/system (apt-get install systemd)')];

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

describe('systemd unit', { skip: skipWithout(...offlineNeeds) }, () => {
  let root = '';
  const unitText = readFileSync(UNIT, 'utf8');

  before(() => {
    requireCapabilities(...offlineNeeds);
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
    const paths = [...new Set([...unitText.matchAll(/^Exec\w+=[-+!@:]*(\/\S+)/gm)].map((m) => m[1] ?? '').filter((p) => p !== '/usr/local/bin/imds-guard'))];
    assert.deepEqual(paths.sort(), ['/bin/kill', '/bin/sh']);
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

// Where this machine's cgroup2 tree is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified
// on a hybrid host); systemd needs a writable one, which it gets as an empty child cgroup.
const CGROUP2 = readFileSync('/proc/self/mountinfo', 'utf8')
  .split('\n')
  .map((l) => l.split(' '))
  .find((f) => f[f.indexOf('-') + 1] === 'cgroup2')?.[4];
const bootNeeds = [ROOT, ...commands('unshare', 'nsenter', 'pivot_root'), capability('cgroup2', CGROUP2 !== undefined, 'no cgroup2 hierarchy on this machine'), BUILT_AGENT];

describe('systemd unit under a real systemd', { skip: skipWithout(...bootNeeds), timeout: 20 * 60_000 }, () => {
  const cgroup = join(CGROUP2 ?? '/nonexistent', `imds-guard-test-${process.pid}`);
  let sys: BootedSystem | undefined;
  const os = (): BootedSystem => {
    assert.ok(sys, 'the system did not boot');
    return sys;
  };
  // Each reader fails when its command does: a failed spawn must not read as "0" or "" on
  // both sides of a comparison.
  const show = (prop: string): string => {
    const r = os().sh(`systemctl show -p ${prop} --value imds-guard`);
    assert.equal(r.status, 0, `systemctl show -p ${prop}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const mainPid = (): number => {
    const pid = Number(show('MainPID'));
    assert.ok(Number.isInteger(pid) && pid > 0, `imds-guard has no main process (MainPID=${pid})`);
    return pid;
  };
  const restarts = (): number => {
    const n = Number(show('NRestarts'));
    assert.ok(Number.isInteger(n), `NRestarts=${n}`);
    return n;
  };
  const journal = (): string => {
    const r = os().sh('journalctl -u imds-guard --no-pager -o cat');
    assert.equal(r.status, 0, `journalctl: ${r.stderr}`);
    return r.stdout;
  };
  const count = (text: string, needle: string): number => text.split(needle).length - 1;
  const setConfig = (yaml: string): void => {
    os().sh(`printf '%s' '${yaml}' >/etc/imds-guard/config.yaml`);
  };
  const goodConfig = 'docker: false\n';

  before(async () => {
    requireCapabilities(...bootNeeds);
    const agent = theAgent();
    const base = buildTestRoot();
    process.stdout.write(`# systemd boot test runs ${agent.label}\n`);
    mkdirSync(cgroup);
    sys = await BootedSystem.boot(
      'sh',
      ['-c', 'echo $$ >"$0/cgroup.procs" && exec unshare --cgroup --net --pid --mount --uts --ipc --fork --kill-child "$@"', cgroup],
      'systemd-ns.sh',
      base,
      agent.path,
    );
    await os().waitFor('multi-user.target', () => os().sh('systemctl is-active multi-user.target').stdout.trim() === 'active', 120_000);
  });

  after(async () => {
    await sys?.destroy();
    // systemd leaves its (empty) cgroups behind; remove them deepest first.
    run('sh', ['-c', 'find "$0" -depth -type d -exec rmdir {} + 2>/dev/null; true', cgroup]);
  });

  test('boots with imds-guard active, and docker.service starts only once the host is protected', () => {
    assert.equal(show('ActiveState'), 'active', journal());
    const saw = os().sh('cat /run/docker-saw').stdout;
    assert.match(saw, /^imds-guard=active$/m, saw);
    assert.match(saw, /^protected=yes$/m, saw);
  });

  test('the agent runs with CAP_NET_ADMIN and CAP_NET_RAW only, no new privileges, a seccomp filter', () => {
    const status = os().sh(`cat /proc/${mainPid()}/status`).stdout;
    const field = (name: string): string => new RegExp(`^${name}:\\s*(\\S+)`, 'm').exec(status)?.[1] ?? '';
    const netAdminAndRaw = ((1n << 12n) | (1n << 13n)).toString(16).padStart(16, '0');
    assert.equal(field('CapBnd'), netAdminAndRaw);
    assert.equal(field('CapEff'), netAdminAndRaw);
    assert.equal(field('NoNewPrivs'), '1');
    assert.equal(field('Seccomp'), '2');
  });

  test('the agent sees a read-only system but for its state directory, /etc/local.d and the xtables lock', () => {
    const inAgent = (cmd: string): number | null => os().sh(`nsenter -t ${mainPid()} -m -- sh -c '${cmd}'`).status;
    assert.notEqual(inAgent('touch /usr/imds-guard-probe'), 0, '/usr is writable');
    assert.notEqual(inAgent('touch /etc/imds-guard-probe'), 0, '/etc is writable');
    assert.notEqual(inAgent('touch /run/imds-guard-probe'), 0, '/run is writable');
    assert.equal(inAgent('touch /var/lib/imds-guard/probe && rm /var/lib/imds-guard/probe'), 0);
    assert.equal(inAgent('touch /etc/local.d/probe && rm /etc/local.d/probe'), 0);
    assert.equal(inAgent(': >>/run/xtables.lock'), 0);
    assert.match(os().sh('stat -c %a /run/xtables.lock').stdout, /^600$/m);
  });

  test('the iptables-legacy backend works inside the sandbox too (raw socket, /proc/net, xtables lock)', async () => {
    os().sh('mkdir -p /etc/systemd/system/imds-guard.service.d && printf "[Service]\\nEnvironment=IMDS_GUARD_BACKEND=legacy\\n" >/etc/systemd/system/imds-guard.service.d/legacy.conf && systemctl daemon-reload');
    try {
      assert.equal(os().sh('systemctl restart imds-guard').status, 0, journal());
      await os().waitFor('the legacy chain', () => os().sh('iptables-legacy-save -t nat').stdout.includes(':IMDS-GUARD'), 15_000);
      assert.equal(show('ActiveState'), 'active');
      assert.equal(os().sh('imds-guard audit --backend legacy').status, 0);
    } finally {
      os().sh('rm -r /etc/systemd/system/imds-guard.service.d && systemctl daemon-reload && systemctl restart imds-guard');
    }
  });

  test('inside the sandbox the agent reads the Docker API, creates Docker\'s parent cgroup and reads another user\'s container process cgroup (ProtectControlGroups=no, ProtectProc=default)', async () => {
    // A host-network "container": a process of another user (nobody) in a cgroup of its
    // own, outside Docker's parent, so only its own rule, from its /proc/PID/cgroup, covers it.
    // Named after the container's id, as Docker names a container's cgroup (the agent
    // writes no own rule for a cgroup that is not recognisably the container's).
    const id = 'fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210';
    const cgroupPath = `/imdsg-hostnet-${id}`;
    const fake = `/sys/fs/cgroup${cgroupPath}`;
    const sleeper = os().sh(`mkdir ${fake} && { setsid sh -c 'echo $$ >${fake}/cgroup.procs && exec setpriv --reuid=65534 --regid=65534 --clear-groups sleep 600' >/dev/null 2>&1 </dev/null & echo $!; }`);
    const pid = Number(sleeper.stdout.trim());
    assert.ok(pid > 1, `no host-network stand-in process: ${sleeper.stdout}${sleeper.stderr}`);
    const server = `node /usr/local/lib/fake-docker-api.mjs /run/docker.sock ${pid} ${id}`;
    os().sh(`setsid ${server} >/run/fake-docker.log 2>&1 </dev/null & echo $! >/run/fake-docker.pid`);
    try {
      await os().waitFor('the fake Docker socket', () => os().sh('test -S /run/docker.sock').status === 0, 10_000);
      assert.equal(os().sh('test -d /sys/fs/cgroup/docker').status, 1, 'Docker\'s parent cgroup exists before the agent made it');
      setConfig('docker: true\n');
      assert.equal(os().sh('systemctl restart imds-guard').status, 0, journal());
      // Either backend: after the legacy test, auto may well pick legacy.
      const filter = (): string => os().sh('iptables-nft-save -t filter; iptables-legacy-save -t filter').stdout;
      await os()
        .waitFor('the host-network rules in IMDS-GUARD-OUT', () => new RegExp(`-A IMDS-GUARD-OUT .*--path "?${cgroupPath}"? .*-j REJECT`).test(filter()), 20_000)
        .catch(() => assert.fail(`no own rule for the host-network process ${pid}:\n${filter()}\n${os().sh('cat /run/fake-docker.log; cat /proc/' + pid + '/cgroup; imds-guard audit').stdout}\n${journal().split('\n').slice(-15).join('\n')}`));
      assert.match(filter(), /-A IMDS-GUARD-OUT .*-m cgroup --path "?\/docker"? .*-j REJECT/, 'no parent rule');
      assert.equal(os().sh('test -d /sys/fs/cgroup/docker').status, 0, 'the agent did not create Docker\'s parent cgroup');
      const report = JSON.parse(os().sh('imds-guard audit --format json').stdout) as {
        networks: { name: string; interface: string | null; coverage: string }[];
        hostContainers: { name: string; cgroup: string | null; coverage: string }[];
      };
      const custom = report.networks.find((n) => n.name === 'custom');
      assert.deepEqual({ iface: custom?.interface, coverage: custom?.coverage }, { iface: 'custombr0', coverage: 'forwarded' }, JSON.stringify(report.networks));
      assert.deepEqual(report.hostContainers.map((c) => [c.name, c.cgroup, c.coverage]), [['hostnet-fake', cgroupPath, 'own-rule']]);
      // The one-shot apply lists the networks; the agent then also watches the events.
      const requests = (): string => os().sh('cat /run/fake-docker.log').stdout;
      await os().waitFor("the agent's event subscription", () => /^GET \S*\/events/m.test(requests()), 10_000);
      assert.match(requests(), /^GET \S*\/networks/m);
    } finally {
      setConfig(goodConfig);
      os().sh(`kill $(cat /run/fake-docker.pid) ${pid}; rm -f /run/docker.sock; systemctl restart imds-guard`);
      // Empty once its process is gone (rmdir fails while it is not: try for a moment).
      os().sh(`for i in 1 2 3 4 5 6 7 8 9 10; do rmdir ${fake} 2>/dev/null && break; sleep 0.2; done`);
    }
  });

  test('systemctl reload validates and sends SIGHUP; the agent reloads without restarting', async () => {
    const pid = mainPid();
    const before = count(journal(), '"event":"reloaded"');
    const r = os().sh('systemctl reload imds-guard');
    assert.equal(r.status, 0, r.stderr);
    await os().waitFor('the "reloaded" log line', () => count(journal(), '"event":"reloaded"') === before + 1, 10_000);
    assert.equal(mainPid(), pid);
  });

  test('a killed agent is restarted (Restart=on-failure, RestartSec=5s)', async () => {
    const pid = mainPid();
    const before = restarts();
    const started = count(journal(), '"event":"started"');
    os().sh(`kill -KILL ${pid}`);
    await os().waitFor('a restarted agent', () => show('ActiveState') === 'active' && Number(show('MainPID')) !== pid && Number(show('MainPID')) > 0, 20_000);
    assert.equal(restarts(), before + 1);
    // Type=exec is active as soon as node is exec'd; the next test's SIGTERM must find
    // the agent's handlers installed.
    await os().waitFor('the restarted agent\'s "started" log line', () => count(journal(), '"event":"started"') === started + 1, 15_000);
  });

  test('stop ends the agent with SIGTERM, status 0, within seconds, and leaves the protection in place', () => {
    const t0 = Date.now();
    const r = os().sh('systemctl stop imds-guard');
    const took = Date.now() - t0;
    assert.equal(r.status, 0, r.stderr);
    assert.ok(took < 5_000, `stop took ${took} ms`);
    assert.equal(show('ActiveState'), 'inactive');
    assert.equal(show('Result'), 'success');
    assert.equal(show('ExecMainStatus'), '0');
    assert.equal(os().sh('imds-guard audit').status, 0, 'the rules went away with the agent');
  });

  test('an invalid configuration fails the start and is not restarted in a loop (exit 2)', async () => {
    setConfig('mode: invalid\n');
    try {
      os().sh('systemctl start imds-guard');
      await os().waitFor('the failed state', () => show('ActiveState') === 'failed', 15_000);
      const failedAt = restarts();
      assert.equal(show('ExecMainStatus'), '2');
      await sleep(7_000); // longer than RestartSec
      assert.equal(show('ActiveState'), 'failed');
      assert.equal(restarts(), failedAt);
    } finally {
      setConfig(goodConfig);
    }
    assert.equal(os().sh('systemctl reset-failed imds-guard; systemctl start imds-guard').status, 0);
    assert.equal(show('ActiveState'), 'active');
  });

  test('poweroff stops the agent and ends every process of the system', async () => {
    const s = os();
    assert.equal(show('ActiveState'), 'active', 'the agent is not running: poweroff would have nothing to stop');
    const ended = await s.powerOff('systemctl start poweroff.target --job-mode=replace-irreversibly --no-block', 60_000);
    assert.notEqual(ended, 'timeout', `systemd did not power off:\n${s.console}`);
    assert.throws(() => process.kill(s.hostPid, 0), 'PID 1 of the test system survived');
    assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(s.work), 'a mount of the test system is visible on this machine');
  });
});
