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

test('the monitor runs line-buffered through stdbuf, and a relevant change wakes the runner while others do not', () => {
  const { spawn, children } = fakeSpawn();
  const reasons: string[] = [];
  const w = watchNetfilter(spawn, recordingLog().log, { backend: 'nft', onChange: (r) => reasons.push(r), clock: fakeClock() });
  assert.equal(children.length, 1);
  assert.deepEqual([children[0]!.file, ...children[0]!.args], ['stdbuf', '-oL', 'xtables-monitor', '--event']);
  children[0]!.handlers.line(' EVENT: -4 -t nat -D PREROUTING -j IMDS-GUARD');
  children[0]!.handlers.line('NEWGEN: GENID=4 PID=9680 NAME=iptables');
  children[0]!.handlers.line(' EVENT: -4 -t nat -A DOCKER -i docker0 -j RETURN');
  children[0]!.handlers.line(' EVENT: -6 -t filter -A FORWARD -j ACCEPT');
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

test('without stdbuf the monitor is started directly (with a warning) instead of not at all', () => {
  const { spawn, children } = fakeSpawn();
  const { log, lines } = recordingLog();
  const w = watchNetfilter(spawn, log, { backend: 'nft', onChange: () => {}, clock: fakeClock() });
  children[0]!.handlers.exit({ code: null, signal: null, error: new CommandError('stdbuf not found', 'command-missing', 'stdbuf'), stderr: '' });
  assert.deepEqual([children[1]!.file, ...children[1]!.args], ['xtables-monitor', '--event']);
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
