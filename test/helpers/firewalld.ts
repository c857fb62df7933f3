import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Netns } from './netns.js';

/**
 * Debian's real firewalld on a private bus, in a test's throwaway network namespace.
 * - The bus is a dbus-daemon of our own with session.conf's policy (anyone may send,
 *   receive and own any name): no system policy, no polkit, so firewalld authorises
 *   uid 0 by itself. (With only send and own allowed, the daemon drops every reply.)
 * - firewalld runs under `nsenter --net`, so it builds its tables in the namespace only;
 *   its configuration is a temp copy (--system-config) with CleanupModulesOnExit=no, so
 *   stopping it never unloads the machine's kernel modules. It still writes temp files
 *   under /run/firewalld (it has no option for that).
 * Every process is started here and stopped by its pid in `destroy`.
 */
export interface FirewalldLab {
  /** The environment that points a client (the watcher, firewall-cmd, the agent) at the private bus. */
  readonly env: NodeJS.ProcessEnv;
  startBus(): Promise<void>;
  stopBus(): Promise<void>;
  startFirewalld(): Promise<void>;
  stopFirewalld(): Promise<void>;
  /** SIGHUP: how systemd reloads firewalld. */
  hangUp(): void;
  /** `firewall-cmd ARGS` in the namespace; throws unless it exits 0. */
  cmd(args: readonly string[]): string;
  destroy(): Promise<void>;
}

export async function until(what: string, ok: () => boolean, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function stopChild(child: ChildProcess | null): Promise<void> {
  if (child === null || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(t);
}

export function firewalldLab(ns: Netns): FirewalldLab {
  const dir = mkdtempSync(join(tmpdir(), 'imdsg-firewalld-'));
  const socket = join(dir, 'bus');
  const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${socket}` };
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

  let bus: ChildProcess | null = null;
  let firewalld: ChildProcess | null = null;
  const start = (file: string, args: readonly string[]): ChildProcess => spawn('nsenter', [`--net=${ns.path}`, file, ...args], { env, stdio: ['ignore', 'ignore', 'ignore'] });
  const cmd = (args: readonly string[]): string => ns.check('firewall-cmd', args, { env });

  return {
    env,
    async startBus() {
      rmSync(socket, { force: true });
      bus = start('dbus-daemon', [`--config-file=${join(dir, 'bus.conf')}`, '--nofork', '--nopidfile']);
      await until('the bus socket', () => existsSync(socket));
    },
    async stopBus() {
      await stopChild(bus);
      bus = null;
    },
    async startFirewalld() {
      firewalld = start('firewalld', ['--nofork', '--nopid', '--system-config', join(dir, 'etc'), '--log-target', 'console']);
      await until('firewalld running', () => ns.run('firewall-cmd', ['--state'], { env }).stdout.trim() === 'running');
    },
    async stopFirewalld() {
      await stopChild(firewalld);
      firewalld = null;
    },
    hangUp: () => void firewalld?.kill('SIGHUP'),
    cmd,
    async destroy() {
      await stopChild(firewalld);
      await stopChild(bus);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
