import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { watchFirewalld } from '../../src/shell/firewalld-watch.js';
import { firewalldLab, until } from '../helpers/firewalld.js';
import { createNetns } from '../helpers/netns.js';

/**
 * Debian's real firewalld on a private bus, in a throwaway network namespace
 * (test/helpers/firewalld.ts): the watcher sees it start, reload (firewall-cmd --reload,
 * SIGHUP) and stop, and comes back when the bus itself restarts.
 */
const ns = createNetns('firewalld-watch');
const fw = firewalldLab(ns);
const reasons: string[] = [];
const seen = (reason: string, from: number) => (): boolean => reasons.slice(from).includes(reason);
let watcher: { stop(): void } | undefined;

after(async () => {
  watcher?.stop();
  await fw.destroy();
  ns.destroy();
});

test('the watcher subscribes on the bus the address names', async () => {
  await fw.startBus();
  const events: unknown[] = [];
  const log = { debug() {}, info: (o: { event?: unknown }) => void events.push(o.event), warn() {} } as never;
  watcher = watchFirewalld(log, { onChange: (r) => reasons.push(r), env: fw.env, backoff: { initialMs: 100, maxMs: 1_000 } });
  // Subscribed (both AddMatch answered) before firewalld starts, or its NameOwnerChanged could come first.
  await until('the watcher subscribed', () => events.includes('firewalld-watch-started'));
});

test('firewalld starting in the namespace wakes the runner (NameOwnerChanged)', async () => {
  const from = reasons.length;
  await fw.startFirewalld();
  await until('firewalld-started', seen('firewalld-started', from));
  assert.match(ns.check('nft', ['list', 'tables']), /table inet firewalld/, 'firewalld built its table in the namespace');
});

test('firewall-cmd --reload wakes the runner (Reloaded)', async () => {
  const from = reasons.length;
  assert.equal(fw.cmd(['--reload']).trim(), 'success');
  await until('firewalld-reloaded', seen('firewalld-reloaded', from));
});

test('SIGHUP (how systemd reloads firewalld) wakes the runner too', async () => {
  const from = reasons.length;
  fw.hangUp();
  await until('firewalld-reloaded', seen('firewalld-reloaded', from));
});

test('firewalld stopping wakes the runner (CleanupOnExit flushes what it had set up)', async () => {
  const from = reasons.length;
  await fw.stopFirewalld();
  await until('firewalld-stopped', seen('firewalld-stopped', from));
});

test('a restarted bus is reconnected, asks for a pass, and reloads are seen again', async () => {
  let from = reasons.length;
  await fw.stopBus();
  await fw.startBus();
  await until('firewalld-watch-reconnected', seen('firewalld-watch-reconnected', from));
  from = reasons.length;
  await fw.startFirewalld();
  assert.equal(fw.cmd(['--reload']).trim(), 'success');
  await until('firewalld-reloaded', seen('firewalld-reloaded', from));
  assert.ok(reasons.slice(from).includes('firewalld-started'));
});
