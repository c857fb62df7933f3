import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CommandError } from '../../src/errors.js';
import type { LineHandlers, SpawnLines } from '../../src/shell/exec.js';
import { watchNetfilter } from '../../src/shell/netfilter-watch.js';
import { fakeClock } from '../helpers/fake-clock.js';

interface FakeChild {
  readonly file: string;
  readonly args: readonly string[];
  readonly handlers: LineHandlers;
  readonly pid: number;
  killed: NodeJS.Signals | null;
}

/** A spawn that records each child; the test feeds its lines and ends it. */
function fakeSpawn(): { spawn: SpawnLines; children: FakeChild[] } {
  const children: FakeChild[] = [];
  const spawn: SpawnLines = (file, args, handlers) => {
    const c: FakeChild = { file, args, handlers, pid: 1000 + children.length, killed: null };
    children.push(c);
    return { pid: c.pid, kill: (sig = 'SIGTERM') => void (c.killed = sig) };
  };
  return { spawn, children };
}

function recordingLog() {
  const lines: { level: string; event: unknown }[] = [];
  const at = (level: string) => (obj: object) => void lines.push({ level, event: (obj as { event?: unknown }).event });
  return { log: { debug: at('debug'), info: at('info'), warn: at('warn') } as never, lines };
}

const died = { code: 1, signal: null, error: null, stderr: 'cannot bind to nfnetlink socket: Operation not permitted' } as const;

const missing = (file: string) => ({ code: null, signal: null, error: new CommandError(`${file} not found`, 'command-missing', file), stderr: '' });

test('nft monitor is the first choice, and a relevant change wakes the runner while others do not', () => {
  const { spawn, children } = fakeSpawn();
  const reasons: string[] = [];
  const w = watchNetfilter(spawn, recordingLog().log, { backend: 'nft', onChange: (r) => reasons.push(r), clock: fakeClock() });
  assert.equal(children.length, 1);
  assert.deepEqual([children[0]!.file, ...children[0]!.args], ['nft', 'monitor']);
  children[0]!.handlers.line('delete rule ip nat PREROUTING handle 3');
  children[0]!.handlers.line('# new generation 4 by process 9680 (iptables)');
  children[0]!.handlers.line('add rule ip nat DOCKER iifname "docker0" counter packets 0 bytes 0 return');
  children[0]!.handlers.line('add rule ip6 filter FORWARD counter packets 0 bytes 0 accept');
  assert.deepEqual(reasons, ['netfilter-change', 'netfilter-change']);
  w.stop();
});

test("a change in a native nftables table (not iptables-nft's) wakes the runner with netfilter-native, so the agent's next pass reads the native tables", () => {
  const { spawn, children } = fakeSpawn();
  const reasons: string[] = [];
  const w = watchNetfilter(spawn, recordingLog().log, { backend: 'nft', onChange: (r) => reasons.push(r), clock: fakeClock() });
  children[0]!.handlers.line('add table inet evil');
  children[0]!.handlers.line('add chain inet evil pre { type filter hook prerouting priority raw; policy accept; }');
  children[0]!.handlers.line('add rule inet evil pre ip daddr 169.254.169.254 notrack');
  children[0]!.handlers.line('add rule ip6 six pre ip6 daddr fd00::/8 notrack');
  children[0]!.handlers.line('add rule ip nat PREROUTING ip daddr 169.254.169.254 accept');
  children[0]!.handlers.line('add rule bridge b pre notrack');
  assert.deepEqual(reasons, ['netfilter-native', 'netfilter-native', 'netfilter-native', 'netfilter-native', 'netfilter-change']);
  w.stop();
});

test('without nft, xtables-monitor runs line-buffered through stdbuf and its lines are read as its own', () => {
  const { spawn, children } = fakeSpawn();
  const reasons: string[] = [];
  const w = watchNetfilter(spawn, recordingLog().log, { backend: 'nft', onChange: (r) => reasons.push(r), clock: fakeClock() });
  children[0]!.handlers.exit(missing('nft'));
  assert.equal(children.length, 2);
  assert.deepEqual([children[1]!.file, ...children[1]!.args], ['stdbuf', '-oL', 'xtables-monitor', '--event']);
  children[1]!.handlers.line(' EVENT: -4 -t nat -D PREROUTING -j IMDS-GUARD');
  children[1]!.handlers.line('NEWGEN: GENID=4 PID=9680 NAME=iptables');
  children[1]!.handlers.line(' EVENT: -4 -t nat -A DOCKER -i docker0 -j RETURN');
  children[1]!.handlers.line(' EVENT: -6 -t filter -A FORWARD -j ACCEPT');
  assert.deepEqual(reasons, ['netfilter-change', 'netfilter-change']);
  w.stop();
});

test('a monitor that dies is restarted with doubling backoff up to the cap, logged once, and each restart asks for a pass', async () => {
  const clock = fakeClock();
  const { spawn, children } = fakeSpawn();
  const { log, lines } = recordingLog();
  const reasons: string[] = [];
  const w = watchNetfilter(spawn, log, { backend: 'nft', onChange: (r) => reasons.push(r), clock, backoff: { initialMs: 100, maxMs: 400, healthyAfterMs: 10_000 } });
  const gaps: number[] = [];
  for (let i = 0; i < 5; i++) {
    const before = children.length;
    children.at(-1)!.handlers.exit(died);
    const t0 = clock.now();
    while (children.length === before) await clock.advance(10);
    gaps.push(clock.now() - t0);
  }
  assert.deepEqual(gaps, [100, 200, 400, 400, 400]);
  assert.deepEqual(reasons, Array(5).fill('netfilter-monitor-restarted'));
  assert.equal(lines.filter((l) => l.level === 'warn' && l.event === 'netfilter-watch-down').length, 1);
  w.stop();
});

test('a monitor that ran healthily before dying restarts after the initial delay and is reported again', async () => {
  const clock = fakeClock();
  const { spawn, children } = fakeSpawn();
  const { log, lines } = recordingLog();
  const w = watchNetfilter(spawn, log, { backend: 'nft', onChange: () => {}, clock, backoff: { initialMs: 100, maxMs: 400, healthyAfterMs: 1_000 } });
  children[0]!.handlers.exit(died);
  await clock.advance(100);
  children[1]!.handlers.exit(died);
  await clock.advance(200);
  assert.equal(children.length, 3);
  await clock.advance(5_000); // the third ran for 5 s: healthy
  children[2]!.handlers.exit(died);
  await clock.advance(100);
  assert.equal(children.length, 4);
  assert.equal(lines.filter((l) => l.level === 'warn' && l.event === 'netfilter-watch-down').length, 2);
  w.stop();
});

test('stop kills the running monitor by its pid and nothing restarts it', async () => {
  const clock = fakeClock();
  const { spawn, children } = fakeSpawn();
  const w = watchNetfilter(spawn, recordingLog().log, { backend: 'nft', onChange: () => {}, clock });
  w.stop();
  assert.equal(children[0]!.killed, 'SIGTERM');
  children[0]!.handlers.exit({ code: null, signal: 'SIGTERM', error: null, stderr: '' });
  await clock.advance(60_000);
  assert.equal(children.length, 1);
  assert.equal(clock.pending(), 0);
});

test('stop during a restart backoff cancels the restart', async () => {
  const clock = fakeClock();
  const { spawn, children } = fakeSpawn();
  const w = watchNetfilter(spawn, recordingLog().log, { backend: 'nft', onChange: () => {}, clock });
  children[0]!.handlers.exit(died);
  w.stop();
  await clock.advance(60_000);
  assert.equal(children.length, 1);
  assert.equal(clock.pending(), 0);
});

test('without nft and stdbuf, xtables-monitor is started directly (with a warning) instead of not at all', () => {
  const { spawn, children } = fakeSpawn();
  const { log, lines } = recordingLog();
  const w = watchNetfilter(spawn, log, { backend: 'nft', onChange: () => {}, clock: fakeClock() });
  children[0]!.handlers.exit(missing('nft'));
  children[1]!.handlers.exit(missing('stdbuf'));
  assert.deepEqual([children[2]!.file, ...children[2]!.args], ['xtables-monitor', '--event']);
  assert.ok(lines.some((l) => l.level === 'warn' && l.event === 'netfilter-watch-unbuffered'));
  w.stop();
});

test('on legacy iptables nothing is spawned and the log says the drift check is the only trigger', () => {
  const { spawn, children } = fakeSpawn();
  const { log, lines } = recordingLog();
  watchNetfilter(spawn, log, { backend: 'legacy', onChange: () => {}, clock: fakeClock() }).stop();
  assert.equal(children.length, 0);
  assert.deepEqual(lines, [{ level: 'info', event: 'netfilter-watch-unavailable' }]);
});

test('xtables-monitor dying on a change it cannot print (1.8.9 and IPv6 tcp rules) is restarted at once, without backoff, and the change wakes the runner', async () => {
  const clock = fakeClock();
  const { spawn, children } = fakeSpawn();
  const { log, lines } = recordingLog();
  const reasons: string[] = [];
  const w = watchNetfilter(spawn, log, { backend: 'nft', onChange: (r) => reasons.push(r), clock });
  children[0]!.handlers.exit(missing('nft'));
  for (let i = 0; i < 5; i++) {
    await clock.advance(1_000);
    const c = children.at(-1)!;
    c.handlers.line(' EVENT: -6 -t nat '); // what it printed before 'Parsing nftables rule failed'
    c.handlers.exit({ code: 3, signal: null, error: null, stderr: 'Perhaps xtables-monitor or your kernel needs to be upgraded.' });
  }
  assert.equal(children.length, 7, 'each death restarted at once');
  assert.deepEqual(reasons, Array(5).fill(['netfilter-change', 'netfilter-monitor-restarted']).flat());
  assert.equal(lines.filter((l) => l.level === 'warn').length, 0);
  w.stop();
});

test('a monitor that dies young after reporting a change still backs off (no tight restart loop)', async () => {
  const clock = fakeClock();
  const { spawn, children } = fakeSpawn();
  const w = watchNetfilter(spawn, recordingLog().log, { backend: 'nft', onChange: () => {}, clock, backoff: { initialMs: 100, maxMs: 400, healthyAfterMs: 10_000 } });
  children[0]!.handlers.line('add table ip nat');
  children[0]!.handlers.exit(died);
  assert.equal(children.length, 1);
  await clock.advance(100);
  assert.equal(children.length, 2);
  w.stop();
});
