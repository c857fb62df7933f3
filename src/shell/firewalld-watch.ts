import type { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { type Clock, type Timer, realClock } from './clock.js';

/**
 * Wakes the pass runner when firewalld reloads or restarts, as Docker does: a reload can
 * flush iptables rules (firewalld #863, #1340), and on legacy iptables nothing else would
 * notice before the drift check. firewalld says so on the system bus: the `Reloaded`
 * signal of org.fedoraproject.FirewallD1, and NameOwnerChanged for that name when it
 * starts or stops. No system bus (a container without /run/dbus): nothing to watch.
 * The D-Bus client is loaded only once a bus socket exists.
 */
export const FIREWALLD = 'org.fedoraproject.FirewallD1';
const DEFAULT_SOCKET = '/var/run/dbus/system_bus_socket';

export const MATCH_RULES = [
  `type='signal',sender='${FIREWALLD}',interface='${FIREWALLD}',member='Reloaded'`,
  `type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='${FIREWALLD}'`,
];

/** The connection the watcher needs: raw messages, and its end. */
export interface BusConnection {
  readonly connection: EventEmitter & { end(): unknown };
  addMatch(rule: string, callback: (err: unknown) => void): void;
}

export type ConnectBus = (socketPath: string) => Promise<BusConnection>;

/** @homebridge/dbus-native, loaded on first use; connected to the socket path directly (never an address it could exec). */
export const connectBus: ConnectBus = async (socketPath) => {
  type Module = { createClient(opts: { socket: string }): BusConnection };
  // A CommonJS module: its exports arrive as `default` (and, bundled, sometimes beside it).
  const mod = (await import('@homebridge/dbus-native')) as unknown as Module & { default?: Module };
  return (mod.default ?? mod).createClient({ socket: socketPath });
};

/**
 * The system bus socket from DBUS_SYSTEM_BUS_ADDRESS (or the default), or null when the
 * address names none we connect to. Only `unix:path=` is taken: the address comes from
 * the environment, and other transports (tcp, unixexec, which runs a program) have no
 * business carrying the local system bus.
 */
export function systemBusSocket(env: NodeJS.ProcessEnv): string | null {
  const address = env.DBUS_SYSTEM_BUS_ADDRESS;
  if (address === undefined || address === '') return DEFAULT_SOCKET;
  for (const entry of address.split(';')) {
    const m = /^unix:(.*)$/.exec(entry.trim());
    if (m === null) continue;
    for (const kv of m[1]!.split(',')) {
      const [key, value] = kv.split('=', 2);
      // D-Bus escapes bytes outside [-0-9A-Za-z_/.\*] as %XX.
      if (key === 'path' && value !== undefined && value.startsWith('/')) return decodeURIComponent(value);
    }
  }
  return null;
}

/** What a bus message means for us, or null. Messages are untrusted: every field is checked. */
export function firewalldWake(msg: unknown): 'firewalld-reloaded' | 'firewalld-started' | 'firewalld-stopped' | null {
  if (typeof msg !== 'object' || msg === null) return null;
  const m = msg as { type?: unknown; interface?: unknown; member?: unknown; body?: unknown };
  if (m.type !== 4) return null; // SIGNAL
  if (m.interface === FIREWALLD && m.member === 'Reloaded') return 'firewalld-reloaded';
  if (m.interface === 'org.freedesktop.DBus' && m.member === 'NameOwnerChanged' && Array.isArray(m.body)) {
    const [name, , newOwner] = m.body as unknown[];
    if (name !== FIREWALLD || typeof newOwner !== 'string') return null;
    // Stopping with CleanupOnExit flushes what firewalld had set up: worth a look too.
    return newOwner === '' ? 'firewalld-stopped' : 'firewalld-started';
  }
  return null;
}

export interface FirewalldWatchOptions {
  onChange(reason: string): void;
  readonly env?: NodeJS.ProcessEnv;
  readonly connect?: ConnectBus;
  readonly exists?: (path: string) => boolean;
  readonly clock?: Clock;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  /** How long the bus may take to answer AddMatch before the connection counts as broken. */
  readonly callTimeoutMs?: number;
}

export type WatchLog = Pick<Logger, 'debug' | 'info' | 'warn'>;

export function watchFirewalld(log: WatchLog, opts: FirewalldWatchOptions): { stop(): void } {
  const socket = systemBusSocket(opts.env ?? process.env);
  if (socket === null) {
    log.debug({ event: 'firewalld-watch-off', address: (opts.env ?? process.env).DBUS_SYSTEM_BUS_ADDRESS }, 'the system bus address names no unix socket path: firewalld reloads are not watched');
    return { stop() {} };
  }
  if (!(opts.exists ?? existsSync)(socket)) {
    log.debug({ event: 'firewalld-watch-off', socket }, 'no system bus here: firewalld reloads are not watched');
    return { stop() {} };
  }
  const connect = opts.connect ?? connectBus;
  const clock = opts.clock ?? realClock;
  const backoff = opts.backoff ?? { initialMs: 500, maxMs: 30_000 };
  const callTimeoutMs = opts.callTimeoutMs ?? 5_000;
  let stopped = false;
  let bus: BusConnection | null = null;
  let timer: Timer | null = null;
  let delay = backoff.initialMs;
  let everConnected = false;
  let reportedDown = false;

  const addMatch = (b: BusConnection, rule: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const t = clock.after(callTimeoutMs, () => reject(new Error(`the bus did not answer AddMatch within ${callTimeoutMs} ms`)));
      b.addMatch(rule, (err) => {
        t.cancel();
        if (err === null || err === undefined) resolve();
        else reject(new Error(`AddMatch refused: ${(err as { name?: unknown }).name ?? String(err)}`));
      });
    });

  const retryLater = (why: string): void => {
    if (stopped) return;
    if (!reportedDown) {
      log.warn({ event: 'firewalld-watch-down', why }, `lost the system bus (${why}); firewalld reloads are not seen until it is back; retrying`);
      reportedDown = true;
    }
    timer = clock.after(delay, () => {
      timer = null;
      void start();
    });
    delay = Math.min(delay * 2, backoff.maxMs);
  };

  const down = (b: BusConnection, why: string): void => {
    if (bus !== b) return; // this connection was already given up
    bus = null;
    // The 'error' listener stays: an error event without one would throw.
    b.connection.removeAllListeners('message');
    b.connection.end();
    retryLater(why);
  };

  async function start(): Promise<void> {
    let b: BusConnection;
    try {
      b = await connect(socket!);
    } catch (e) {
      retryLater((e as Error).message);
      return;
    }
    if (stopped) {
      b.connection.end();
      return;
    }
    bus = b;
    b.connection.on('error', (e: Error) => down(b, e.message));
    b.connection.on('end', () => down(b, 'the bus closed the connection'));
    b.connection.on('message', (msg: unknown) => {
      const reason = firewalldWake(msg);
      if (reason === null) return;
      log.info({ event: reason }, `firewalld: ${reason.slice('firewalld-'.length)}; checking the rules`);
      opts.onChange(reason);
    });
    try {
      for (const rule of MATCH_RULES) await addMatch(b, rule);
    } catch (e) {
      down(b, (e as Error).message);
      return;
    }
    if (stopped || bus !== b) return;
    delay = backoff.initialMs;
    reportedDown = false;
    log.info({ event: everConnected ? 'firewalld-watch-reconnected' : 'firewalld-watch-started', socket }, 'watching firewalld reloads on the system bus');
    // A reload while we were away went unseen.
    if (everConnected) opts.onChange('firewalld-watch-reconnected');
    everConnected = true;
  }

  void start();
  return {
    stop() {
      stopped = true;
      timer?.cancel();
      timer = null;
      const b = bus;
      bus = null;
      if (b !== null) {
        b.connection.removeAllListeners('message');
        b.connection.end();
      }
    },
  };
}
