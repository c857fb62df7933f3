import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Endpoint } from '../../src/core/endpoint.js';
import type { ProbeOutcome, ProbeTarget } from '../../src/core/probe-report.js';
import { cgroup2Root, probeFromNamespace } from '../../src/shell/probe.js';
import { REPO, ensureBuilt } from '../helpers/cli.js';
import { type Netns, createNetns } from '../helpers/netns.js';

/**
 * The probe shell against the real kernel, without Docker: a "container" made of a
 * `sleep` in a throwaway network namespace and in a throwaway cgroup (v2) named like a
 * container id, and a listener on its loopback. Proves the child lands in the namespace,
 * tells connected / refused / timed out apart, and joins the cgroup first when asked, so
 * an iptables `-m cgroup` rule applies to it. Everything runs on the namespace's loopback.
 */
const SCRIPT = join(REPO, 'dist', 'probe-child.cjs');
const OPEN = 8080;
const CLOSED = 8081;
const DROPPED = 8082;
const ep = (port: number, family: Endpoint['family'] = 'ipv4'): Endpoint => ({ family, address: family === 'ipv4' ? '127.0.0.1' : '::1', port });

let ns: Netns;
let sleeper: ChildProcess;
let server: ChildProcess;
const id = randomBytes(32).toString('hex');
const cgroupName = `imdsg-probetest-${id}`;
let cgroupDir = '';
let target: ProbeTarget;

function started(child: ChildProcess, marker: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes(marker)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before "${marker}": ${out}`)));
  });
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));
}

const results = (os: ProbeOutcome[]) => os.map((o) => (o.result === 'not-probed' ? `not-probed: ${o.reason}` : o.result));

before(async () => {
  ensureBuilt();
  ns = createNetns('probe');
  ns.check('ip', ['link', 'set', 'lo', 'up']);
  // A TCP listener that closes each connection at once, on both loopbacks.
  const code = `const net=require('node:net');let n=0;for(const h of ['127.0.0.1','::1'])net.createServer(s=>s.destroy()).listen(${OPEN},h,()=>{if(++n===2)console.log('ready')});`;
  server = spawn('nsenter', [`--net=${ns.path}`, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  await started(server, 'ready');
  ns.check('iptables', ['-A', 'OUTPUT', '-p', 'tcp', '--dport', String(DROPPED), '-j', 'DROP']);
  sleeper = spawn('nsenter', [`--net=${ns.path}`, 'sleep', '600'], { stdio: 'ignore' });
  const root = cgroup2Root(readFileSync('/proc/self/mountinfo', 'utf8'));
  assert.ok(root, 'no cgroup2 mount');
  cgroupDir = join(root, cgroupName);
  mkdirSync(cgroupDir);
  // Only a process this test started is moved.
  writeFileSync(join(cgroupDir, 'cgroup.procs'), String(sleeper.pid));
  target = { network: 'test', container: { id, name: 'sleeper', pid: sleeper.pid ?? 0 }, hostNetwork: false, cgroup: null };
});

after(async () => {
  server?.kill('SIGKILL');
  sleeper?.kill('SIGKILL');
  await Promise.all([server, sleeper].filter((c) => c !== undefined).map(exited));
  if (cgroupDir !== '') {
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(cgroupDir);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  ns?.destroy();
});

describe('probeFromNamespace in a real namespace', () => {
  test('one child answers every endpoint: connected, refused, timed out, for both families', async () => {
    const t0 = performance.now();
    const out = await probeFromNamespace(target, [ep(OPEN), ep(CLOSED), ep(DROPPED), ep(OPEN, 'ipv6'), ep(CLOSED, 'ipv6')], { timeoutMs: 300, script: SCRIPT });
    const took = performance.now() - t0;
    assert.deepEqual(results(out), ['connected', 'refused', 'timeout', 'connected', 'refused']);
    const dropped = out[2];
    assert.ok(dropped?.result === 'timeout' && dropped.ms >= 290 && dropped.ms < 600, JSON.stringify(dropped));
    assert.ok(took < 300 + 2000, `took ${took} ms`);
    assert.deepEqual(out.map((o) => [o.network, o.container.name]), Array(5).fill(['test', 'sleeper']));
  });

  test('the connection is made from the container\'s namespace, not ours: our loopback has no listener there', async () => {
    // In this process's namespace port OPEN is (almost certainly) closed; the namespace's is open.
    const out = await probeFromNamespace(target, [ep(OPEN)], { timeoutMs: 300, script: SCRIPT });
    assert.deepEqual(results(out), ['connected']);
  });

  test('a host-network probe joins the container\'s cgroup first, so a cgroup rule applies to it, and leaves it when done', async (t) => {
    const rule = ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '127.0.0.1', '--dport', String(OPEN), '-m', 'cgroup', '--path', cgroupName, '-j', 'REDIRECT', '--to-ports', String(CLOSED)];
    ns.check('iptables', rule);
    t.after(() => void ns.check('iptables', ['-t', 'nat', '-D', ...rule.slice(3)]));
    const asHost = { ...target, hostNetwork: true, cgroup: `/${cgroupName}` };
    assert.deepEqual(results(await probeFromNamespace(asHost, [ep(OPEN)], { timeoutMs: 300, script: SCRIPT })), ['refused']);
    // The same namespace without the cgroup: the rule does not see it.
    assert.deepEqual(results(await probeFromNamespace(target, [ep(OPEN)], { timeoutMs: 300, script: SCRIPT })), ['connected']);
    assert.deepEqual(readFileSync(join(cgroupDir, 'cgroup.procs'), 'utf8').trim().split('\n'), [String(sleeper.pid)]);
  });

  test('a cgroup that does not exist is not probed', async () => {
    const out = await probeFromNamespace({ ...target, hostNetwork: true, cgroup: `/${cgroupName}-gone` }, [ep(OPEN)], { timeoutMs: 300, script: SCRIPT });
    assert.match(results(out)[0] ?? '', /^not-probed: cgroup \/imdsg-probetest-\w+-gone of container sleeper does not exist under /);
  });

  test('without nsenter the target is not probed, with the reason', async () => {
    const out = await probeFromNamespace(target, [ep(OPEN), ep(CLOSED)], { timeoutMs: 300, script: SCRIPT, nsenter: '/nonexistent/nsenter' });
    assert.deepEqual(results(out), Array(2).fill('not-probed: nsenter is not installed (Debian/Alpine package util-linux / util-linux-misc)'));
  });

  test('an abort kills the child and reports its endpoints as not probed', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const t0 = performance.now();
    const out = await probeFromNamespace(target, [ep(DROPPED)], { timeoutMs: 5000, script: SCRIPT, signal: ac.signal });
    assert.deepEqual(results(out), ['not-probed: the probe time budget ran out during this network']);
    assert.ok(performance.now() - t0 < 1000);
  });

  test('a namespace nsenter may not enter (an unprivileged caller) is not probed, with nsenter\'s reason', async () => {
    // The namespace file opens (we are root), but setns as nobody fails: nsenter run
    // through setpriv stands for a caller without CAP_SYS_ADMIN.
    const out = await probeFromNamespace(target, [ep(OPEN)], { timeoutMs: 300, script: SCRIPT, nsenter: join(REPO, 'test', 'fixtures', 'nsenter-as-nobody') });
    assert.match(results(out)[0] ?? '', /^not-probed: could not enter the namespace of process \d+: nsenter exited 1: /);
  });
});
