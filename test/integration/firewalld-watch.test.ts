import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { watchFirewalld } from '../../src/shell/firewalld-watch.js';
import { createNetns } from '../helpers/netns.js';

/**
 * Debian's real firewalld on a private bus, in a throwaway network namespace: the
 * watcher sees it start, reload (firewall-cmd --reload, SIGHUP) and stop, and comes back
 * when the bus itself restarts.
 * - The bus is a dbus-daemon of our own with session.conf's policy (anyone may send,
 *   receive and own any name): no system policy, no polkit, so firewalld authorises
 *   uid 0 by itself. (With only send and own allowed, the daemon drops every reply.)
 * - firewalld runs under `nsenter --net`, so it builds its tables in the namespace only;
 *   its configuration is a temp copy (--system-config) with CleanupModulesOnExit=no, so
 *   stopping it never unloads the machine's kernel modules. It still writes temp files
 *   under /run/firewalld (it has no option for that).
 */
const ns = createNetns('firewalld-watch');
const dir = mkdtempSync(join(tmpdir(), 'imdsg-firewalld-'));
const socket = join(dir, 'bus');
const busEnv = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${socket}` };
const children = new Set<ChildProcess>();

writeFileSync(
  join(dir, 'bus.conf'),
  `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`,
);
mkdirSync(join(dir, 'etc'));
copyFileSync('/etc/firewalld/firewalld.conf', join(dir, 'etc', 'firewalld.conf'));
const conf = readFileSync(join(dir, 'etc', 'firewalld.conf'), 'utf8');
writeFileSync(join(dir, 'etc', 'firewalld.conf'), `${conf.replace(/^CleanupModulesOnExit=.*$/m, '')}\nCleanupModulesOnExit=no\n`);

function start(file: string, args: readonly string[]): ChildProcess {
  const child = spawn('nsenter', [`--net=${ns.path}`, file, ...args], { env: busEnv, stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(t);
}

const startBus = async (): Promise<ChildProcess> => {
  rmSync(socket, { force: true });
  const bus = start('dbus-daemon', [`--config-file=${join(dir, 'bus.conf')}`, '--nofork', '--nopidfile']);
  await until('the bus socket', () => existsSync(socket));
  return bus;
};
const startFirewalld = (): ChildProcess => start('firewalld', ['--nofork', '--nopid', '--system-config', join(dir, 'etc'), '--log-target', 'console']);

async function until(what: string, ok: () => boolean, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const reasons: string[] = [];
const seen = (reason: string, from: number) => (): boolean => reasons.slice(from).includes(reason);
let bus: ChildProcess;
let firewalld: ChildProcess;
let watcher: { stop(): void } | undefined;

after(async () => {
  watcher?.stop();
  for (const c of [...children]) await stopChild(c);
  ns.destroy();
  rmSync(dir, { recursive: true, force: true });
});

test('the watcher subscribes on the bus the address names', async () => {
  bus = await startBus();
  const log = { debug() {}, info() {}, warn() {} } as never;
  watcher = watchFirewalld(log, { onChange: (r) => reasons.push(r), env: busEnv, backoff: { initialMs: 100, maxMs: 1_000 } });
  // The bus tells the watcher nothing when it subscribed; firewalld starting is the proof.
});

test('firewalld starting in the namespace wakes the runner (NameOwnerChanged)', async () => {
  const from = reasons.length;
  firewalld = startFirewalld();
  await until('firewalld-started', seen('firewalld-started', from));
  await until('firewalld running', () => ns.run('firewall-cmd', ['--state'], { env: busEnv }).stdout.trim() === 'running');
  assert.match(ns.check('nft', ['list', 'tables']), /table inet firewalld/, 'firewalld built its table in the namespace');
});

test('firewall-cmd --reload wakes the runner (Reloaded)', async () => {
  const from = reasons.length;
  assert.equal(ns.check('firewall-cmd', ['--reload'], { env: busEnv }).trim(), 'success');
  await until('firewalld-reloaded', seen('firewalld-reloaded', from));
});

test('SIGHUP (how systemd reloads firewalld) wakes the runner too', async () => {
  const from = reasons.length;
  firewalld.kill('SIGHUP');
  await until('firewalld-reloaded', seen('firewalld-reloaded', from));
});

test('firewalld stopping wakes the runner (CleanupOnExit flushes what it had set up)', async () => {
  const from = reasons.length;
  await stopChild(firewalld);
  await until('firewalld-stopped', seen('firewalld-stopped', from));
});

test('a restarted bus is reconnected, asks for a pass, and reloads are seen again', async () => {
  let from = reasons.length;
  await stopChild(bus);
  bus = await startBus();
  await until('firewalld-watch-reconnected', seen('firewalld-watch-reconnected', from));
  from = reasons.length;
  firewalld = startFirewalld();
  await until('firewalld running', () => ns.run('firewall-cmd', ['--state'], { env: busEnv }).stdout.trim() === 'running');
  assert.equal(ns.check('firewall-cmd', ['--reload'], { env: busEnv }).trim(), 'success');
  await until('firewalld-reloaded', seen('firewalld-reloaded', from));
  assert.ok(reasons.slice(from).includes('firewalld-started'));
});
