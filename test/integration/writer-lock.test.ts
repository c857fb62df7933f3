import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { before, describe, test } from 'node:test';
import { bareAgentHost, startAgent } from '../helpers/agent.js';
import { CLI, type Host, JUMP_LINE, ensureBuilt, freshHost } from '../helpers/cli.js';
import { type Netns, createNetns } from '../helpers/netns.js';

/**
 * One writer per network namespace, with real processes: `nsenter --net=… node
 * dist/cli.js apply` twice in one throwaway namespace (the lock is an abstract unix
 * socket, which belongs to the network namespace), the first slowed down inside its
 * iptables-restore by a PATH shim so the second is sure to arrive while it writes.
 */
before(() => ensureBuilt());

const VERSION = '0.1.0';
const RESTORE_TOOLS = ['iptables-nft-restore', 'iptables-legacy-restore', 'ip6tables-nft-restore', 'ip6tables-legacy-restore'];

function which(name: string): string {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (dir !== '' && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`${name} not found on PATH`);
}

/** A PATH directory whose iptables-restore tools say they started (the file `marker`), sleep, then run the real one. */
function slowRestores(host: Host, seconds: number): { dir: string; marker: string } {
  const dir = join(host.root, `slow-${seconds}`);
  const marker = join(dir, 'restoring');
  mkdirSync(dir, { recursive: true });
  for (const name of RESTORE_TOOLS) {
    // Next on PATH after this directory: the host's recording shim, then the real tool.
    writeFileSync(join(dir, name), `#!/bin/sh\n: > "${marker}"\nsleep ${seconds}\nexec "${join(host.shimDir, name)}" "$@"\n`, { mode: 0o755 });
  }
  return { dir, marker };
}

interface Running {
  readonly pid: number;
  readonly done: Promise<{ code: number; stdout: string; stderr: string; endedAt: number }>;
  /** SIGKILL to its whole process group (node and the shim's sleep). */
  kill(): void;
}

/** `node dist/cli.js ARGS` in the namespace, in a process group of its own; nsenter execs node, so pid is the CLI's. */
function startCli(ns: Netns, env: NodeJS.ProcessEnv, args: readonly string[]): Running {
  const child = spawn('nsenter', [`--net=${ns.path}`, process.execPath, CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const pid = child.pid;
  if (pid === undefined) throw new Error('nsenter did not start');
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  const done = new Promise<{ code: number; stdout: string; stderr: string; endedAt: number }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code: code ?? (signal === 'SIGKILL' ? 137 : 128), stdout, stderr, endedAt: performance.now() }));
  });
  const kill = (): void => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  process.once('exit', kill);
  return { pid, done, kill };
}

async function until(what: string, ok: () => boolean, timeoutMs = 20_000): Promise<void> {
  const t0 = performance.now();
  while (!ok()) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Our jumps in PREROUTING, over both backends and families. */
function jumps(ns: Netns): number {
  let n = 0;
  for (const family of ['ipv4', 'ipv6'] as const) {
    for (const backend of ['nft', 'legacy'] as const) n += ns.natRules(family, backend).filter((l) => l === JUMP_LINE).length;
  }
  return n;
}

/** Starts an apply that holds the writer lock for `seconds` (it sleeps inside its first restore) and resolves once it does. */
async function slowApply(ns: Netns, host: Host, seconds: number): Promise<Running> {
  const slow = slowRestores(host, seconds);
  const first = startCli(ns, { ...host.env, PATH: `${slow.dir}:${host.env.PATH ?? ''}` }, ['apply', ...host.args]);
  await until('restore by the first apply', () => existsSync(slow.marker));
  return first;
}

describe('one writer per network namespace', () => {
  test('a second apply waits for the first, says whom it waits for, and then reads the table the first wrote: one install, not two interleaved', async (t) => {
    const { ns, host } = freshHost(t, 'wlock');
    const first = await slowApply(ns, host, 1.5);
    t.after(() => first.kill());
    const t0 = performance.now();
    const second = await startCli(ns, host.env, ['apply', ...host.args, '--writer-lock-wait', '20']).done;
    const a = await first.done;
    assert.equal(a.code, 0, a.stderr);
    assert.equal(second.code, 0, second.stderr);
    assert.ok(second.endedAt >= a.endedAt, 'the second apply finished before the first');
    assert.ok(second.endedAt - t0 >= 1_000, `the second apply took ${Math.round(second.endedAt - t0)} ms: it did not wait`);
    assert.match(second.stderr, new RegExp(`waiting up to 20 s for imds-guard apply \\(pid ${first.pid}, version ${VERSION.replace(/\./g, '\\.')}\\), which holds the writer lock`));
    // The first wrote both families; the second found them converged and wrote nothing.
    // One transaction per table (nat, filter) and family.
    assert.equal(host.restores().length, 4, host.restores().map((r) => r.tool).join(', '));
    assert.equal(jumps(ns), 2, 'one jump per family');
  });

  test('with a short wait, a second apply exits 3 with one line naming the holder, and writes nothing', async (t) => {
    const { ns, host } = freshHost(t, 'wlock');
    const first = await slowApply(ns, host, 4);
    t.after(() => first.kill());
    const t0 = performance.now();
    const second = await startCli(ns, host.env, ['apply', ...host.args, '--writer-lock-wait', '1']).done;
    const took = second.endedAt - t0;
    assert.equal(second.code, 3, second.stdout + second.stderr);
    const lines = second.stderr.trimEnd().split('\n');
    assert.equal(
      lines.at(-1),
      `imds-guard: the writer lock of this network namespace is held by imds-guard apply (pid ${first.pid}, version ${VERSION}), which is changing the tables; gave up after 1 s (writerLockWaitSeconds)`,
    );
    assert.ok(took >= 1_000 && took < 3_500, `gave up after ${Math.round(took)} ms`);
    assert.equal(second.stdout, '');
    first.kill();
    await first.done;
    assert.deepEqual(host.restores(), [], 'something was written (the first was killed inside its first restore)');
  });

  test('a holder killed with SIGKILL leaves no stale lock: the next apply gets it at once', async (t) => {
    const { ns, host } = freshHost(t, 'wlock');
    const first = await slowApply(ns, host, 30);
    t.after(() => first.kill());
    first.kill();
    await first.done;
    const next = await startCli(ns, host.env, ['apply', ...host.args, '--writer-lock-wait', '0']).done;
    assert.equal(next.code, 0, next.stderr);
    assert.equal(next.stderr, '');
  });

  test('the same lock in another network namespace is another lock: an apply there does not wait', async (t) => {
    const { ns, host } = freshHost(t, 'wlock');
    const other = createNetns('wlock-other');
    t.after(() => other.destroy());
    const first = await slowApply(ns, host, 4);
    t.after(() => first.kill());
    const elsewhere = await startCli(other, host.env, ['apply', ...host.args, '--writer-lock-wait', '0']).done;
    assert.equal(elsewhere.code, 0, elsewhere.stderr);
    assert.equal(elsewhere.stderr, '');
    assert.equal(jumps(other), 2);
    first.kill();
    await first.done;
  });
});

describe('one agent per network namespace (or several with one configuration)', () => {
  test('a second agent with a different configuration refuses to start (exit 2, one line naming the first); one with the same configuration starts with a warning and takes over the name when the first stops', async (t) => {
    const { host: where, root, configFile } = bareAgentHost(t, 'agents', 'docker: false\n');

    const first = await startAgent(where, { root, configFile });
    t.after(async () => void (await first.stop().catch(() => {})));

    const refusedBy = async (pid: number): Promise<void> => {
      const other = await startAgent(where, { root, configFile, extraArgs: ['--allow', 'docker0'], waitReady: false });
      t.after(async () => void (await other.stop().catch(() => {})));
      const exit = await Promise.race([other.exited, new Promise<null>((r) => setTimeout(() => r(null), 15_000))]);
      assert.ok(exit !== null, `the agent with another configuration kept running\n${other.tail()}`);
      assert.equal(exit.code, 2, other.tail());
      // 'exit' can come before the last of its output has been read.
      await until('the another-agent line', () => other.events('another-agent').length > 0 && other.tail().includes('imds-guard: another agent'), 2_000).catch(() => {});
      const event = other.events('another-agent')[0];
      assert.ok(event !== undefined && event.level === 50 && event.otherPid === pid, other.tail());
      assert.match(other.tail(), new RegExp(`imds-guard: another agent, imds-guard run \\(pid ${pid}, version ${VERSION.replace(/\./g, '\\.')}\\), runs in this network namespace with a different configuration \\(digest [0-9a-f]{16}, ours [0-9a-f]{16}\\)`));
      assert.deepEqual(other.events('started'), [], 'it started before refusing');
    };
    await refusedBy(first.pid);

    // Same flags, same file: the same configuration (and the same state file, so wait for its own lines).
    const same = await startAgent(where, { root, configFile, waitReady: false });
    t.after(async () => void (await same.stop().catch(() => {})));
    const warned = await same.waitFor('another-agent', (l) => l.event === 'another-agent');
    assert.ok(warned.level === 40 && warned.otherPid === first.pid, JSON.stringify(warned));
    await same.waitFor('started', (l) => l.event === 'started');
    await same.waitFor('a pass', (l) => l.event === 'reconciled' || l.event === 'repaired');
    assert.ok(first.alive() && same.alive());

    // The first goes; the second holds the name from its next pass on, and is the one a newcomer meets.
    assert.equal((await first.stop()).code, 0);
    await new Promise((r) => setTimeout(r, 2_500));
    await refusedBy(same.pid);
    assert.ok(same.alive());
  });
});
