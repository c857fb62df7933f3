import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Hold, type PassOutcome, createPassRunner } from '../../src/app/pass-runner.js';
import { fakeClock, settle } from '../helpers/fake-clock.js';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

test('a burst of requests during a pass is coalesced into exactly one more pass', async () => {
  const passes: string[][] = [];
  let release: () => void = () => {};
  const runner = createPassRunner(async (reasons) => {
    passes.push(reasons);
    if (passes.length === 1) await new Promise<void>((r) => (release = r));
  });
  runner.request('start');
  await tick();
  for (let i = 0; i < 50; i++) runner.request('docker-create');
  release();
  await runner.idle(1000);
  assert.equal(passes.length, 2);
  assert.deepEqual(passes[1], ['docker-create']);
});

test('passes never overlap', async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  const runner = createPassRunner(async () => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await tick(5);
    inFlight--;
  });
  for (let i = 0; i < 5; i++) {
    runner.request('a');
    await tick(2);
  }
  await runner.idle(1000);
  assert.equal(maxInFlight, 1);
});

test('a failing pass does not stop later passes', async () => {
  let n = 0;
  const runner = createPassRunner(async () => {
    n++;
    if (n === 1) throw new Error('boom');
  });
  runner.request('a');
  await runner.idle(1000);
  runner.request('b');
  await runner.idle(1000);
  assert.equal(n, 2);
});

test('after stop, requests start no pass', async () => {
  let n = 0;
  const runner = createPassRunner(async () => {
    n++;
  });
  runner.stop();
  runner.request('a');
  await runner.idle(100);
  assert.equal(n, 0);
});

// ---- minimum interval and repair backoff, on a fake clock ----

/**
 * A runner whose passes take `passMs` of fake time and find what `outcome` says, holding
 * it as the agent does when it is the held repair; records when each started, and when
 * each pass that repaired started.
 */
function harness(opts: { outcome?: (n: number) => PassOutcome; passMs?: number; exempt?: (r: string) => boolean; minIntervalMs?: number; maxBackoffMs?: number } = {}) {
  const clock = fakeClock(0);
  const starts: number[] = [];
  const repairs: number[] = [];
  const holds: (Hold | null)[] = [];
  const reasons: string[][] = [];
  const backoffs: number[] = [];
  const runner = createPassRunner(
    async (r, hold) => {
      const at = clock.now();
      starts.push(at);
      reasons.push(r);
      holds.push(hold);
      if (opts.passMs !== undefined) await new Promise<void>((done) => clock.after(opts.passMs!, done));
      const found = opts.outcome?.(starts.length) ?? { repairedSignature: null };
      if (hold !== null && found.repairedSignature === hold.signature) return { repairedSignature: null, held: true };
      if (found.repairedSignature !== null) repairs.push(at);
      return found;
    },
    { clock, minIntervalMs: opts.minIntervalMs ?? 100, maxBackoffMs: opts.maxBackoffMs ?? 1_600, onBackoff: (b) => backoffs.push(b.intervalMs), ...(opts.exempt === undefined ? {} : { exempt: opts.exempt }) },
  );
  return { clock, runner, starts, repairs, holds, reasons, backoffs };
}

const gaps = (starts: readonly number[]): number[] => starts.slice(1).map((t, i) => t - starts[i]!);

test('the first request after a quiet spell runs at once: the minimum interval never delays a lone event', async () => {
  const { clock, runner, starts } = harness();
  await clock.advance(5_000);
  runner.request('docker-create');
  await settle();
  assert.deepEqual(starts, [5_000]);
  runner.request('docker-create');
  await clock.advance(10_000);
  runner.request('docker-create');
  await settle();
  assert.deepEqual(starts, [5_000, 5_100, 15_000]);
});

test('a request inside the minimum interval waits for it, and everything that arrives meanwhile is one pass', async () => {
  const { clock, runner, starts, reasons } = harness();
  runner.request('start');
  await settle();
  for (let i = 0; i < 20; i++) {
    await clock.advance(4);
    runner.request(i % 2 === 0 ? 'netfilter-change' : 'docker-create');
  }
  await clock.advance(1_000);
  assert.deepEqual(starts, [0, 100]);
  assert.deepEqual(reasons[1], ['netfilter-change', 'docker-create']);
});

test('under a constant stream of wake-ups, passes start no closer than the minimum interval', async () => {
  const { clock, runner, starts } = harness({ passMs: 30 });
  for (let t = 0; t < 2_000; t += 5) {
    runner.request('netfilter-change');
    await clock.advance(5);
  }
  await clock.advance(1_000);
  assert.ok(gaps(starts).every((g) => g >= 100), JSON.stringify(gaps(starts)));
  assert.ok(starts.length <= 21, `${starts.length} passes in 2 s`);
});

test('a pass slower than the interval is followed at once: the interval is between starts, not a pause after each pass', async () => {
  const { clock, runner, starts } = harness({ passMs: 250 });
  runner.request('a');
  await clock.advance(10);
  runner.request('b');
  await clock.advance(1_000);
  assert.deepEqual(starts, [0, 250]);
});

/**
 * A fighter that undoes each repair within 50 ms (less than any interval): every pass
 * finds the same thing to repair, and a request is always waiting when the next is due.
 * Runs until `passes` passes have started (`until: 'repairs'`: until that many repaired).
 */
async function fight(h: ReturnType<typeof harness>, passes: number, until: 'starts' | 'repairs' = 'starts'): Promise<void> {
  let answered = 0;
  h.runner.request('netfilter-change');
  while ((until === 'starts' ? h.starts : h.repairs).length < passes) {
    if (h.starts.length > answered) {
      answered = h.starts.length;
      h.runner.request('netfilter-change');
    }
    await h.clock.advance(50);
  }
}

test('the same repair over and over doubles the wait between the repairs up to the cap; wake-ups meanwhile run a pass at most every second, which holds it', async () => {
  const h = harness({ outcome: () => ({ repairedSignature: 'ipv4 jump-not-first' }) });
  await fight(h, 8, 'repairs');
  assert.deepEqual(gaps(h.repairs), [100, 200, 400, 800, 1_600, 1_600, 1_600]);
  assert.deepEqual(h.backoffs, [200, 400, 800, 1_600]);
  assert.deepEqual(h.runner.backoff(), { intervalMs: 1_600, repeats: 7, signature: 'ipv4 jump-not-first' });
  // Between two repairs 1 600 ms apart, one pass looked (1 000 ms after the repair) and held it.
  assert.ok(gaps(h.starts).every((g) => g >= 100 && g <= 1_000), JSON.stringify(gaps(h.starts)));
  const held = h.holds.filter((x) => x !== null);
  assert.ok(held.length >= 3 && held.every((x) => x.signature === 'ipv4 jump-not-first'), JSON.stringify(h.holds));
  assert.ok(h.starts.length > h.repairs.length);
});

test('during a long backoff, a different repair is made at the next look (within a second), not when the backoff ends', async () => {
  let undone = 'sig';
  const h = harness({ outcome: () => ({ repairedSignature: undone }), maxBackoffMs: 30_000 });
  await fight(h, 6, 'repairs'); // repairs at 0, 100, 300, 700, 1 500, 3 100: the next may come at 6 300
  assert.deepEqual(h.repairs, [0, 100, 300, 700, 1_500, 3_100]);
  assert.equal(h.runner.backoff().intervalMs, 3_200);
  undone = 'other';
  h.runner.request('netfilter-change');
  await h.clock.advance(1_000);
  const looked = h.starts.filter((t) => t > 3_100);
  assert.deepEqual(looked, [4_100], 'looked one second after the repair');
  assert.equal(h.repairs.at(-1), 4_100, 'and repaired the other thing at once');
  assert.deepEqual(h.runner.backoff(), { intervalMs: 100, repeats: 0, signature: 'other' });
});

test('a held repair is made when its backoff ends, without another wake-up', async () => {
  const h = harness({ outcome: () => ({ repairedSignature: 'sig' }) });
  await fight(h, 5); // repairs at 0, 100, 300, 700, 1 500: the next may come at 3 100
  assert.deepEqual(h.repairs, [0, 100, 300, 700, 1_500]);
  h.runner.request('netfilter-change'); // the fighter undoes it once more, and stops
  await h.clock.advance(1_100);
  assert.deepEqual(h.starts.slice(5), [2_500], 'a look one second after the last pass, held');
  assert.equal(h.repairs.length, 5);
  await h.clock.advance(2_000);
  assert.deepEqual(h.starts.slice(6), [3_100], 'the held repair, when the backoff ended');
  assert.deepEqual(h.reasons[6], ['held-repair']);
  assert.deepEqual(h.repairs.at(-1), 3_100);
});

test('a different repair ends the backoff', async () => {
  const h = harness({ outcome: (n) => ({ repairedSignature: n <= 4 ? 'ipv4 jump-not-first' : 'ipv4 chain-missing' }) });
  await fight(h, 7);
  assert.deepEqual(gaps(h.starts), [100, 200, 400, 800, 100, 200]);
});

test('the pass right after a repair finding nothing (our own write seen) keeps the backoff; nothing to repair two intervals later ends it', async () => {
  // Passes 1-4 repair, 5 finds nothing right after (the echo of our write), 6 repairs again: still backing off.
  const h = harness({ outcome: (n) => ({ repairedSignature: n === 5 || n >= 7 ? null : 'sig' }) });
  await fight(h, 6);
  assert.deepEqual(gaps(h.starts), [100, 200, 400, 800, 800]);
  assert.equal(h.runner.backoff().intervalMs, 1_600);
  // Pass 7 comes long after the last repair and finds nothing: the fight is over.
  await h.clock.advance(10_000);
  h.runner.request('drift-check');
  await h.clock.advance(10);
  assert.equal(h.starts.length, 7);
  assert.deepEqual(h.runner.backoff(), { intervalMs: 100, repeats: 0, signature: null });
  assert.equal(h.backoffs.at(-1), 100);
});

test('an exempt reason (a new Docker network) waits out the minimum interval only, never the repair backoff', async () => {
  const h = harness({ outcome: () => ({ repairedSignature: 'sig' }), exempt: (r) => r.startsWith('docker-') });
  await fight(h, 6); // interval now 1 600 ms
  const last = h.starts.at(-1)!;
  await h.clock.advance(1);
  h.runner.request('netfilter-change');
  await h.clock.advance(150);
  assert.equal(h.starts.length, 6, 'a netfilter wake-up waits out the backoff');
  h.runner.request('docker-create');
  await settle();
  assert.deepEqual(h.starts.slice(6), [last + 151]);
  assert.deepEqual(h.reasons[6], ['netfilter-change', 'docker-create']);
});

test('a failing pass neither starts nor ends a backoff', async () => {
  const clock = fakeClock(0);
  const starts: number[] = [];
  const runner = createPassRunner(
    async () => {
      starts.push(clock.now());
      if (starts.length === 3) throw new Error('iptables-save failed');
      return { repairedSignature: 'sig' };
    },
    { clock, minIntervalMs: 100 },
  );
  for (let i = 0; i < 4; i++) {
    runner.request('x');
    await clock.advance(5_000);
  }
  assert.deepEqual(gaps(starts), [5_000, 5_000, 5_000]);
  assert.equal(runner.backoff().repeats, 2);
});

/** A pass has run and a second waits for its turn; `idle()` tells whether idle has resolved. */
async function waitingForTurn() {
  const h = harness();
  h.runner.request('a');
  await settle();
  h.runner.request('b');
  let resolved = false;
  void h.runner.idle(60_000).then(() => (resolved = true));
  await settle();
  return { ...h, idle: () => resolved };
}

test('stop cancels a pass waiting for its turn, and idle resolves at once', async () => {
  const h = await waitingForTurn();
  assert.equal(h.idle(), false, 'a pass waiting for its turn is pending');
  h.runner.stop();
  await settle();
  assert.equal(h.idle(), true);
  await h.clock.advance(1_000);
  assert.equal(h.starts.length, 1);
  assert.equal(h.clock.pending(), 0);
});

test('idle waits for a pass waiting for its turn, then resolves', async () => {
  const h = await waitingForTurn();
  await h.clock.advance(50);
  assert.equal(h.idle(), false);
  await h.clock.advance(60);
  assert.equal(h.starts.length, 2);
  assert.equal(h.idle(), true);
});
