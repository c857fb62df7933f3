import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { type TestContext, after, before, describe, test } from 'node:test';
import { runProbes } from '../../src/app/probe-run.js';
import type { Endpoint } from '../../src/core/endpoint.js';
import { type ProbeOutcome, type ProbeTarget, buildProbeReport, probeFindings } from '../../src/core/probe-report.js';
import { type ProbeFn, cgroup2Root, probeFromNamespace } from '../../src/shell/probe.js';
import { LAB_IMAGE, MD_ADDR, mustDocker } from '../helpers/agent.js';
import { REPO, ensureBuilt } from '../helpers/cli.js';
import { type Lab, labAvailable, startLab } from '../helpers/lab.js';

/**
 * `audit --probe`'s shell against a real dockerd in the lab: the probe enters a running
 * container's network namespace (no image, no new container) and connects to the lab's
 * fake metadata server, before and after a block made by hand in the lab host's nat
 * table; a host-network container is probed from inside its cgroup, so a cgroup rule
 * applies. All rules go into the lab's namespace; nothing leaves the machine.
 */
const NAME = 'probe-e2e';
const available = labAvailable();
// In CI a machine that cannot run the lab is a failure, not a skip.
const skip = available.ok || process.env.CI === 'true' ? false : (available.why ?? true);
const SCRIPT = join(REPO, 'dist', 'probe-child.cjs');
const MD: Endpoint = { family: 'ipv4', address: MD_ADDR, port: 80 };
const BLOCK = ['-d', MD_ADDR, '-p', 'tcp', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '1'];

let lab: Lab | undefined;
let bridged: ProbeTarget;
let hosted: ProbeTarget;

async function runningContainer(l: Lab, name: string, network: string): Promise<{ id: string; name: string; pid: number }> {
  const id = await mustDocker(l, ['run', '-d', '--pull', 'never', '--name', name, '--network', network, LAB_IMAGE, 'sleep', '3600']);
  const pid = Number(await mustDocker(l, ['inspect', '-f', '{{.State.Pid}}', id]));
  assert.ok(Number.isInteger(pid) && pid > 1, `no pid for ${name}`);
  return { id, name, pid };
}

/** The container's cgroup v2 path, as the lead's container listing will read it. */
function cgroupOf(pid: number): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
  assert.ok(line, `process ${pid} has no cgroup v2 line`);
  return line.slice(3);
}

const results = (os: ProbeOutcome[]) => os.map((o) => (o.result === 'not-probed' ? `not-probed: ${o.reason}` : o.result));

function theLab(): Lab {
  assert.ok(lab, 'the lab did not come up');
  return lab;
}

async function inLab(args: readonly string[]): Promise<void> {
  const r = await theLab().inHost('iptables', args);
  assert.equal(r.code, 0, r.stderr);
}

before(async () => {
  if (skip !== false) return;
  ensureBuilt();
  lab = await startLab(NAME);
  const web = await runningContainer(lab, 'web-1', 'lab-user');
  bridged = { network: 'lab-user', container: web, hostNetwork: false, cgroup: null };
  const agentLike = await runningContainer(lab, 'hostnet-1', 'host');
  hosted = { network: 'host', container: agentLike, hostNetwork: true, cgroup: cgroupOf(agentLike.pid) };
});

after(async () => {
  await lab?.down();
});

describe('probeFromNamespace in the lab', { skip }, () => {
  test('before any protection, a container on the user bridge connects to the metadata endpoint: a critical FAIL', async () => {
    const out = await probeFromNamespace(bridged, [MD], { timeoutMs: 1000, script: SCRIPT });
    assert.deepEqual(results(out), ['connected']);
    const [finding] = probeFindings(buildProbeReport(out, []));
    assert.equal(finding?.id, 'IG-701');
    assert.equal(finding.status, 'fail');
    assert.match(finding.evidence[0] ?? '', /^connected in \d+ ms from container web-1 \([0-9a-f]{12}\) on network lab-user$/);
  });

  test('with a redirect to a closed port in the lab host\'s PREROUTING, the same probe is refused: a PASS', async (t) => {
    await inLab(['-t', 'nat', '-I', 'PREROUTING', ...BLOCK]);
    t.after(() => inLab(['-t', 'nat', '-D', 'PREROUTING', ...BLOCK]));
    const out = await probeFromNamespace(bridged, [MD], { timeoutMs: 1000, script: SCRIPT });
    assert.deepEqual(results(out), ['refused']);
    assert.equal(probeFindings(buildProbeReport(out, []))[0]?.status, 'pass');
  });

  test('a pid that does not exist is not probed, with the reason', async () => {
    const gone = { ...bridged, container: { ...bridged.container, pid: 2 ** 22 + 11 } };
    const out = await probeFromNamespace(gone, [MD], { timeoutMs: 1000, script: SCRIPT });
    assert.deepEqual(results(out), [`not-probed: process ${2 ** 22 + 11} is gone (the container stopped)`]);
  });

  test('a stopped container is not probed: its pid no longer names it', async () => {
    const l = theLab();
    const brief = await runningContainer(l, 'brief-1', 'lab-user');
    await mustDocker(l, ['rm', '-f', brief.id]);
    const out = await probeFromNamespace({ ...bridged, container: brief }, [MD], { timeoutMs: 1000, script: SCRIPT });
    assert.match(results(out)[0] ?? '', /^not-probed: process \d+ (is gone|is not \(or no longer\) in container brief-1)/);
  });

  test('a host-network container, probed from its cgroup with no OUTPUT rule yet, connects', async () => {
    const out = await probeFromNamespace(hosted, [MD], { timeoutMs: 1000, script: SCRIPT });
    assert.deepEqual(results(out), ['connected']);
  });

  test('a cgroup rule in the lab host\'s OUTPUT blocks the host-network probe, which proves the probe ran in the container\'s cgroup', async (t) => {
    const rule = ['-d', MD_ADDR, '-p', 'tcp', '--dport', '80', '-m', 'cgroup', '--path', hosted.cgroup?.slice(1) ?? '', '-j', 'REDIRECT', '--to-ports', '1'];
    await inLab(['-t', 'nat', '-I', 'OUTPUT', ...rule]);
    t.after(() => inLab(['-t', 'nat', '-D', 'OUTPUT', ...rule]));
    assert.deepEqual(results(await probeFromNamespace(hosted, [MD], { timeoutMs: 1000, script: SCRIPT })), ['refused']);
    // The same namespace without joining the cgroup is not covered by the rule.
    assert.deepEqual(results(await probeFromNamespace({ ...hosted, hostNetwork: false, cgroup: null }, [MD], { timeoutMs: 1000, script: SCRIPT })), ['connected']);
  });

  test('no container was changed: both still run, in their own cgroups', async () => {
    const l = theLab();
    for (const c of [bridged.container, hosted.container]) {
      assert.equal(await mustDocker(l, ['inspect', '-f', '{{.State.Running}} {{.State.Pid}} {{.RestartCount}}', c.id]), `true ${c.pid} 0`);
    }
    const procs = readFileSync(join(cgroup2Root(readFileSync('/proc/self/mountinfo', 'utf8')) ?? '/sys/fs/cgroup', hosted.cgroup ?? '', 'cgroup.procs'), 'utf8').trim().split('\n');
    assert.deepEqual(procs, [String(hosted.container.pid)]);
  });
});

describe('50 networks: bounded in time, and how long they take', { skip }, () => {
  // 50 targets over the two real namespaces: each is a child of its own, as 50 networks would be.
  const fifty = (): ProbeTarget[] => Array.from({ length: 50 }, (_, i) => ({ ...(i % 2 === 0 ? bridged : hosted), network: `net-${String(i).padStart(2, '0')}` }));
  const probe: ProbeFn = (tg, e, o) => probeFromNamespace(tg, e, { ...o, script: SCRIPT });
  const BUDGET = /^not-probed: the probe time budget \(5000 ms\) ran out (before|during) this network$/;

  async function block(t: TestContext): Promise<void> {
    await inLab(['-t', 'nat', '-I', 'PREROUTING', ...BLOCK]);
    t.after(() => inLab(['-t', 'nat', '-D', 'PREROUTING', ...BLOCK]));
    const rule = ['-d', MD_ADDR, '-p', 'tcp', '--dport', '80', '-m', 'cgroup', '--path', hosted.cgroup?.slice(1) ?? '', '-j', 'REDIRECT', '--to-ports', '1'];
    await inLab(['-t', 'nat', '-I', 'OUTPUT', ...rule]);
    t.after(() => inLab(['-t', 'nat', '-D', 'OUTPUT', ...rule]));
  }

  for (const blocked of [false, true]) {
    test(`50 targets ${blocked ? 'behind the block' : 'unprotected'}, 8 at a time, are answered within the 5 s budget, each ${blocked ? 'refused' : 'connected'} or honestly not probed`, async (t) => {
      if (blocked) await block(t);
      const t0 = performance.now();
      const out = await runProbes(fifty(), [MD], probe, { concurrency: 8, timeoutMs: 1000, totalBudgetMs: 5000 });
      const ms = performance.now() - t0;
      const done = out.filter((o) => o.result !== 'not-probed').length;
      t.diagnostic(`50 targets, concurrency 8, budget 5000 ms: ${Math.round(ms)} ms, ${done} probed (load ${loadavg()[0]?.toFixed(1)})`);
      // Bookkeeping and killing the last children take a few ms past the deadline.
      assert.ok(ms < 5000 + 500, `took ${ms} ms`);
      for (const r of results(out)) assert.ok(r === (blocked ? 'refused' : 'connected') || BUDGET.test(r), r);
      assert.ok(done >= 8, `only ${done} of 50 probed`);
    });
  }

  test('measured: 50 targets without a budget, by concurrency', async (t) => {
    await block(t);
    for (const concurrency of [2, 4, 8, 16]) {
      const t0 = performance.now();
      const out = await runProbes(fifty(), [MD], probe, { concurrency, timeoutMs: 1000, totalBudgetMs: 60_000 });
      const ms = performance.now() - t0;
      t.diagnostic(`50 targets, concurrency ${concurrency}: ${Math.round(ms)} ms (${Math.round(ms / 50)} ms/target, load ${loadavg()[0]?.toFixed(1)})`);
      assert.deepEqual([...new Set(results(out))], ['refused']);
    }
  });
});
