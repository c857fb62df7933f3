import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { type BusConnection, MATCH_RULES, firewalldWake, systemBusSocket, watchFirewalld } from '../../src/shell/firewalld-watch.js';
import { fakeClock, settle } from '../helpers/fake-clock.js';

const silent = { debug() {}, info() {}, warn() {} } as never;

/** A bus connection that answers AddMatch at once; the test emits messages and ends it. */
function fakeBus(opts: { refuse?: boolean } = {}) {
  const matches: string[] = [];
  let ended = false;
  const connection = Object.assign(new EventEmitter(), { end: () => void (ended = true) });
  const bus: BusConnection = { connection, addMatch: (rule, cb) => (matches.push(rule), cb(opts.refuse ? { name: 'org.freedesktop.DBus.Error.AccessDenied' } : null)) };
  return { bus, connection, matches, ended: () => ended };
}

test('the system bus socket: the default, a unix:path address (escapes decoded), and none for other transports', () => {
  assert.equal(systemBusSocket({}), '/var/run/dbus/system_bus_socket');
  assert.equal(systemBusSocket({ DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/tmp/my%20bus,guid=abc' }), '/tmp/my bus');
  assert.equal(systemBusSocket({ DBUS_SYSTEM_BUS_ADDRESS: 'tcp:host=10.0.0.1,port=1;unix:path=/run/dbus/system_bus_socket' }), '/run/dbus/system_bus_socket');
  assert.equal(systemBusSocket({ DBUS_SYSTEM_BUS_ADDRESS: 'unixexec:path=/bin/sh,arg1=-c' }), null);
  assert.equal(systemBusSocket({ DBUS_SYSTEM_BUS_ADDRESS: 'unix:abstract=/tmp/dbus-x' }), null);
  assert.equal(systemBusSocket({ DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=relative' }), null);
});

test("firewalld's Reloaded and its name changing owner wake the runner; anything else on the bus does not", () => {
  assert.equal(firewalldWake({ type: 4, interface: 'org.fedoraproject.FirewallD1', member: 'Reloaded', body: [] }), 'firewalld-reloaded');
  assert.equal(firewalldWake({ type: 4, interface: 'org.freedesktop.DBus', member: 'NameOwnerChanged', body: ['org.fedoraproject.FirewallD1', '', ':1.7'] }), 'firewalld-started');
  assert.equal(firewalldWake({ type: 4, interface: 'org.freedesktop.DBus', member: 'NameOwnerChanged', body: ['org.fedoraproject.FirewallD1', ':1.7', ''] }), 'firewalld-stopped');
  assert.equal(firewalldWake({ type: 4, interface: 'org.freedesktop.DBus', member: 'NameOwnerChanged', body: ['org.example.Other', '', ':1.8'] }), null);
  assert.equal(firewalldWake({ type: 4, interface: 'org.freedesktop.DBus', member: 'NameOwnerChanged', body: 'junk' }), null);
  assert.equal(firewalldWake({ type: 2, interface: 'org.fedoraproject.FirewallD1', member: 'Reloaded' }), null); // a method return
  assert.equal(firewalldWake({ type: 4, interface: 'org.freedesktop.DBus', member: 'NameAcquired', body: [':1.3'] }), null);
  assert.equal(firewalldWake(null), null);
});

test('without a system bus socket nothing is loaded or connected', async () => {
  let connects = 0;
  const w = watchFirewalld(silent, { onChange: () => {}, env: {}, exists: () => false, connect: async () => (connects++, fakeBus().bus) });
  await settle();
  assert.equal(connects, 0);
  w.stop();
});

test('it subscribes to both signals on the socket the address names, and wakes the runner on them', async () => {
  const f = fakeBus();
  const sockets: string[] = [];
  const reasons: string[] = [];
  const w = watchFirewalld(silent, { onChange: (r) => reasons.push(r), env: { DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/tmp/bus' }, exists: () => true, connect: async (s) => (sockets.push(s), f.bus) });
  await settle();
  assert.deepEqual(sockets, ['/tmp/bus']);
  assert.deepEqual(f.matches, MATCH_RULES);
  f.connection.emit('message', { type: 4, interface: 'org.fedoraproject.FirewallD1', member: 'Reloaded', body: [] });
  f.connection.emit('message', { type: 4, interface: 'org.freedesktop.DBus', member: 'NameOwnerChanged', body: ['org.fedoraproject.FirewallD1', '', ':1.9'] });
  assert.deepEqual(reasons, ['firewalld-reloaded', 'firewalld-started']);
  w.stop();
  assert.equal(f.ended(), true);
});

test('a lost bus is reconnected with backoff, and the reconnect asks for a pass (a reload may have been missed)', async () => {
  const clock = fakeClock();
  const buses = [fakeBus(), fakeBus(), fakeBus()];
  let n = 0;
  const reasons: string[] = [];
  const w = watchFirewalld(silent, { onChange: (r) => reasons.push(r), env: {}, exists: () => true, clock, backoff: { initialMs: 100, maxMs: 1_000 }, connect: async () => buses[n++]!.bus });
  await settle();
  buses[0]!.connection.emit('error', new Error('ECONNRESET'));
  buses[0]!.connection.emit('end'); // both come: one reconnect
  await clock.advance(99);
  assert.equal(n, 1);
  await clock.advance(1);
  assert.equal(n, 2);
  assert.deepEqual(reasons, ['firewalld-watch-reconnected']);
  w.stop();
  assert.equal(buses[1]!.ended(), true);
});

test('a refused AddMatch counts as a broken connection and is retried', async () => {
  const clock = fakeClock();
  const buses = [fakeBus({ refuse: true }), fakeBus()];
  let n = 0;
  const w = watchFirewalld(silent, { onChange: () => {}, env: {}, exists: () => true, clock, backoff: { initialMs: 100, maxMs: 1_000 }, connect: async () => buses[n++]!.bus });
  await settle();
  assert.equal(buses[0]!.ended(), true);
  await clock.advance(100);
  assert.equal(n, 2);
  assert.deepEqual(buses[1]!.matches, MATCH_RULES);
  w.stop();
});

test('stop while connecting: the connection that arrives afterwards is closed at once, and nothing retries', async () => {
  const clock = fakeClock();
  const f = fakeBus();
  let release: (b: BusConnection) => void = () => {};
  const w = watchFirewalld(silent, { onChange: () => {}, env: {}, exists: () => true, clock, connect: () => new Promise((r) => (release = r)) });
  await settle();
  w.stop();
  release(f.bus);
  await settle();
  assert.equal(f.ended(), true);
  assert.deepEqual(f.matches, []);
  await clock.advance(60_000);
  assert.equal(clock.pending(), 0);
});
