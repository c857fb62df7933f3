import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runProbes } from '../../src/app/probe-run.js';
import type { Endpoint } from '../../src/core/endpoint.js';
import type { ProbeOutcome, ProbeTarget } from '../../src/core/probe-report.js';
import { type ProbeFn, cgroup2Root, cgroupPathProblem, probeFromNamespace, probeScriptCandidates } from '../../src/shell/probe.js';

const V4: Endpoint = { family: 'ipv4', address: '169.254.169.254', port: 80 };
const V6: Endpoint = { family: 'ipv6', address: 'fd00:ec2::254', port: 80 };

function targets(n: number): ProbeTarget[] {
  return Array.from({ length: n }, (_, i) => ({ network: `net-${String(i).padStart(2, '0')}`, container: { id: 'c'.repeat(64), name: `c${i}`, pid: 1000 + i }, hostNetwork: false, cgroup: null }));
}

/** A fake probe: answers `refused` after `ms`, or gives up with `not-probed` when aborted. */
function fakeProbe(ms: (t: ProbeTarget) => number, seen: { inFlight: number; max: number; started: string[] } = { inFlight: 0, max: 0, started: [] }): ProbeFn {
  return (t, endpoints, opts) =>
    new Promise<ProbeOutcome[]>((resolve) => {
      seen.inFlight++;
      seen.max = Math.max(seen.max, seen.inFlight);
      seen.started.push(t.network);
      const done = (o: ProbeOutcome[]): void => {
        seen.inFlight--;
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        resolve(o);
      };
      const onAbort = (): void => done(endpoints.map((e) => ({ ...base(e), result: 'not-probed', reason: 'aborted' })));
      const base = (e: Endpoint) => ({ network: t.network, container: t.container, hostNetwork: t.hostNetwork, endpoint: e });
      const timer = setTimeout(() => done(endpoints.map((e) => ({ ...base(e), result: 'refused', ms: ms(t), code: 'ECONNREFUSED' }))), ms(t));
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
}

describe('runProbes', () => {
  test('never runs more probes at once than the cap, and answers every target and endpoint in order', async () => {
    const seen = { inFlight: 0, max: 0, started: [] as string[] };
    const ts = targets(20);
    const out = await runProbes(ts, [V4, V6], fakeProbe(() => 5, seen), { concurrency: 3, timeoutMs: 100, totalBudgetMs: 5000 });
    assert.equal(seen.max, 3);
    assert.deepEqual(out.map((o) => `${o.network} ${o.endpoint.family}`), ts.flatMap((t) => [`${t.network} ipv4`, `${t.network} ipv6`]));
    assert.ok(out.every((o) => o.result === 'refused'));
  });

  test('50 networks whose probes all hang finish within the total budget, the rest reported as not probed', async () => {
    const t0 = performance.now();
    const out = await runProbes(targets(50), [V4], fakeProbe(() => 10_000), { concurrency: 8, timeoutMs: 1000, totalBudgetMs: 300 });
    const took = performance.now() - t0;
    assert.ok(took < 400, `took ${took} ms`);
    assert.equal(out.length, 50);
    assert.ok(out.every((o) => o.result === 'not-probed'));
  });

  test('a probe that ignores the abort signal cannot hold the run past its budget', async () => {
    const deaf: ProbeFn = () => new Promise(() => {});
    const t0 = performance.now();
    const out = await runProbes(targets(3), [V4], deaf, { concurrency: 2, timeoutMs: 1000, totalBudgetMs: 100 });
    assert.ok(performance.now() - t0 < 200);
    assert.deepEqual(out.map((o) => (o.result === 'not-probed' ? o.reason : o.result)), [
      'the probe time budget (100 ms) ran out during this network',
      'the probe time budget (100 ms) ran out during this network',
      'the probe time budget (100 ms) ran out before this network',
    ]);
  });

  test('slow probes that fit the budget all run; the per-connection timeout never exceeds what is left', async () => {
    const timeouts: number[] = [];
    const probe = fakeProbe(() => 20);
    const spy: ProbeFn = (t, e, o) => {
      timeouts.push(o.timeoutMs);
      return probe(t, e, o);
    };
    const out = await runProbes(targets(8), [V4], spy, { concurrency: 4, timeoutMs: 1000, totalBudgetMs: 500 });
    assert.ok(out.every((o) => o.result === 'refused'));
    assert.ok(timeouts.every((ms) => ms <= 500));
  });

  test('a probe that throws is reported as not probed, and the others still run', async () => {
    const probe = fakeProbe(() => 1);
    const flaky: ProbeFn = (t, e, o) => (t.network === 'net-01' ? Promise.reject(new Error('EMFILE')) : probe(t, e, o));
    const out = await runProbes(targets(3), [V4], flaky, { concurrency: 8, timeoutMs: 100, totalBudgetMs: 1000 });
    assert.deepEqual(out.map((o) => o.result), ['refused', 'not-probed', 'refused']);
    assert.equal(out[1]?.result === 'not-probed' && out[1].reason, 'the probe failed: EMFILE');
  });

  test('no targets, no probes', async () => {
    assert.deepEqual(await runProbes([], [V4], fakeProbe(() => 1), { concurrency: 8, timeoutMs: 100, totalBudgetMs: 100 }), []);
  });
});

describe('probe shell: pure parts and refusals that need no namespace', () => {
  test('cgroup2 root: /sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup on pure v2, none on pure v1', () => {
    const hybrid = [
      '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
      '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
      '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
    ].join('\n');
    assert.equal(cgroup2Root(hybrid), '/sys/fs/cgroup/unified');
    assert.equal(cgroup2Root('30 23 0:27 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate'), '/sys/fs/cgroup');
    assert.equal(cgroup2Root('30 23 0:27 / /mnt/my\\040cg rw - cgroup2 none rw'), '/mnt/my cg');
    assert.equal(cgroup2Root(hybrid.split('\n').slice(0, 2).join('\n')), null);
  });

  test('a cgroup path outside our cgroup namespace, or the root, is not joined', () => {
    assert.equal(cgroupPathProblem(`/docker/${'a'.repeat(64)}`), null);
    assert.equal(cgroupPathProblem('/system.slice/docker-abc.scope'), null);
    assert.match(cgroupPathProblem('/../docker-abc.scope') ?? '', /outside/);
    assert.match(cgroupPathProblem('/') ?? '', /not a container/);
    assert.match(cgroupPathProblem('docker/abc') ?? '', /not a container/);
  });

  test('the child script is looked for beside the running module and one level up (dist/chunks/)', () => {
    assert.deepEqual(probeScriptCandidates('file:///opt/imds-guard/dist/chunks/audit-X.js'), ['/opt/imds-guard/dist/chunks/probe-child.cjs', '/opt/imds-guard/dist/probe-child.cjs']);
  });

  test('a pid that does not exist is not probed, with the reason', async () => {
    const gone: ProbeTarget = { network: 'lab-user', container: { id: 'd'.repeat(64), name: 'web', pid: 2 ** 22 + 7 }, hostNetwork: false, cgroup: null };
    const out = await probeFromNamespace(gone, [V4, V6], { timeoutMs: 100, script: process.execPath });
    assert.deepEqual(out.map((o) => (o.result === 'not-probed' ? o.reason : o.result)), [`process ${2 ** 22 + 7} is gone (the container stopped)`, `process ${2 ** 22 + 7} is gone (the container stopped)`]);
  });

  test('a pid that is not the container\'s (reused, or a wrong id) is not probed', async () => {
    const mine: ProbeTarget = { network: 'n', container: { id: 'e'.repeat(64), name: 'web', pid: process.pid }, hostNetwork: false, cgroup: null };
    const [o] = await probeFromNamespace(mine, [V4], { timeoutMs: 100, script: process.execPath });
    assert.equal(o?.result, 'not-probed');
    assert.match(o.result === 'not-probed' ? o.reason : '', /not \(or no longer\) in container web/);
  });

  test('a host-network container without a known cgroup is not probed', async () => {
    const host: ProbeTarget = { network: 'host', container: { id: 'e'.repeat(64), name: 'agent', pid: process.pid }, hostNetwork: true, cgroup: null };
    const [o] = await probeFromNamespace(host, [V4], { timeoutMs: 100, script: process.execPath });
    assert.match(o?.result === 'not-probed' ? o.reason : '', /cgroup is unknown/);
  });

  test('a missing probe script is a refusal, not a crash', async () => {
    const t: ProbeTarget = { network: 'n', container: { id: 'e'.repeat(64), name: 'web', pid: process.pid }, hostNetwork: false, cgroup: null };
    const [o] = await probeFromNamespace(t, [V4], { timeoutMs: 100, script: '/nonexistent/probe-child.cjs' });
    assert.match(o?.result === 'not-probed' ? o.reason : '', /probe script probe-child\.cjs is missing/);
  });
});
