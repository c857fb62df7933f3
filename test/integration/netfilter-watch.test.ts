import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { CommandError } from '../../src/errors.js';
import { spawnLines, type SpawnLines } from '../../src/shell/exec.js';
import { watchNetfilter } from '../../src/shell/netfilter-watch.js';
import { createNetns } from '../helpers/netns.js';

/**
 * The real monitors (nft monitor, and xtables-monitor where nft is missing) in a
 * throwaway namespace each, while iptables-nft, ip6tables-nft and nft change that
 * namespace's tables: each change that can undo protection or add a bypass wakes the
 * runner, and changes elsewhere do not. Every transaction ends with one generation line
 * (`NEWGEN:`, `# new generation`), printed after its events, so "this command's events
 * are all in" is exact and no test waits on a timer to prove that nothing came.
 */
for (const tool of ['nft-monitor', 'xtables-monitor'] as const) describe(tool, () => suite(tool));

function suite(tool: 'nft-monitor' | 'xtables-monitor'): void {
const ns = createNetns(`netwatch-${tool}`);
after(() => ns.destroy());

const raw: string[] = [];
const pids: number[] = [];
// nsenter execs the monitor (through stdbuf, which execs too): the pid is the monitor's own.
const inNs: SpawnLines = (file, args, handlers) => {
  if (tool === 'xtables-monitor' && file === 'nft') {
    // As on a host without the nftables package.
    queueMicrotask(() => handlers.exit({ code: null, signal: null, error: new CommandError('nft not found', 'command-missing', 'nft'), stderr: '' }));
    return { pid: undefined, kill() {} };
  }
  const child = spawnLines('nsenter', [`--net=${ns.path}`, file, ...args], { line: (l) => (raw.push(l), handlers.line(l)), exit: handlers.exit });
  if (child.pid !== undefined) pids.push(child.pid);
  return child;
};
const log = { debug() {}, info() {}, warn() {} } as never;
const wakes: string[] = [];

const newgens = (): number => raw.filter((l) => l.startsWith('NEWGEN:') || l.startsWith('# new generation')).length;

async function waitUntil(what: string, ok: () => boolean, timeoutMs = 5_000): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what} within ${timeoutMs} ms; monitor said:\n${raw.slice(-10).join('\n')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs one command that makes one transaction; resolves with the wake-ups its events caused. */
async function change(file: string, args: readonly string[]): Promise<string[]> {
  const gen = newgens();
  const before = wakes.length;
  ns.check(file, args);
  await waitUntil(`no NEWGEN for ${file} ${args.join(' ')}`, () => newgens() > gen);
  return wakes.slice(before);
}

const watcher = watchNetfilter(inNs, log, { backend: 'nft', onChange: (r) => wakes.push(r) });
after(() => watcher.stop());

// The monitor prints nothing when it is ready: a first change that shows up proves it listens.
test('the monitor is listening in the namespace', async () => {
  await waitUntil('the monitor never reported a change', () => {
    ns.run('iptables-nft', ['-t', 'nat', '-N', 'IMDS-GUARD']);
    return newgens() > 0;
  });
});

const RELEVANT: [string, string, readonly string[]][] = [
  ['our rule added', 'iptables-nft', ['-t', 'nat', '-A', 'IMDS-GUARD', '-d', '169.254.169.254', '-p', 'tcp', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '1']],
  ['our jump inserted', 'iptables-nft', ['-t', 'nat', '-I', 'PREROUTING', '-j', 'IMDS-GUARD']],
  ['an ACCEPT inserted above our jump', 'iptables-nft', ['-t', 'nat', '-I', 'PREROUTING', '1', '-d', '169.254.169.254', '-j', 'ACCEPT']],
  ['the ACCEPT deleted', 'iptables-nft', ['-t', 'nat', '-D', 'PREROUTING', '1']],
  ['our chain flushed', 'iptables-nft', ['-t', 'nat', '-F', 'IMDS-GUARD']],
  ['our jump deleted', 'iptables-nft', ['-t', 'nat', '-D', 'PREROUTING', '-j', 'IMDS-GUARD']],
  ['our rule added again', 'iptables-nft', ['-t', 'nat', '-A', 'IMDS-GUARD', '-j', 'RETURN']],
  ['the whole nat table flushed', 'iptables-nft', ['-t', 'nat', '-F']],
  ['our chain deleted', 'iptables-nft', ['-t', 'nat', '-X', 'IMDS-GUARD']],
  ['our chain restored by iptables-restore', 'iptables-nft-restore', ['--noflush', '/dev/stdin']],
  ['an IPv6 jump added', 'ip6tables-nft', ['-t', 'nat', '-A', 'PREROUTING', '-j', 'RETURN']],
  ['an IPv6 nat OUTPUT rule', 'ip6tables-nft', ['-t', 'nat', '-A', 'OUTPUT', '-d', 'fd00:ec2::254', '-j', 'ACCEPT']],
  ['a FORWARD accept (filter)', 'iptables-nft', ['-t', 'filter', '-I', 'FORWARD', '-j', 'ACCEPT']],
  ['a backstop chain of ours in filter', 'iptables-nft', ['-t', 'filter', '-N', 'IMDS-GUARD-FWD']],
  ['a notrack in raw PREROUTING', 'iptables-nft', ['-t', 'raw', '-A', 'PREROUTING', '-d', '169.254.169.254', '-j', 'CT', '--notrack']],
  ['a native nft table', 'nft', ['add', 'table', 'inet', 'bypass']],
  ['a native base chain hooked before dstnat', 'nft', ['add', 'chain', 'inet', 'bypass', 'pre', '{ type filter hook prerouting priority -300; }']],
  ['a native notrack rule the monitor cannot render', 'nft', ['add', 'rule', 'inet', 'bypass', 'pre', 'ip', 'daddr', '169.254.169.254', 'notrack']],
];

const UNRELATED: [string, string, readonly string[]][] = [
  ["Docker's DNAT chain", 'iptables-nft', ['-t', 'nat', '-N', 'DOCKER']],
  ['a rule in DOCKER', 'iptables-nft', ['-t', 'nat', '-A', 'DOCKER', '-i', 'docker0', '-j', 'RETURN']],
  ['a MASQUERADE in POSTROUTING', 'iptables-nft', ['-t', 'nat', '-A', 'POSTROUTING', '-s', '172.17.0.0/16', '-j', 'MASQUERADE']],
  ['a filter chain of someone else', 'iptables-nft', ['-t', 'filter', '-N', 'DOCKER-USER']],
  ['a rule in it', 'iptables-nft', ['-t', 'filter', '-A', 'DOCKER-USER', '-j', 'RETURN']],
  ['filter INPUT', 'iptables-nft', ['-t', 'filter', '-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']],
  ['the mangle table', 'iptables-nft', ['-t', 'mangle', '-A', 'PREROUTING', '-j', 'RETURN']],
  ['an ARP rule (arptables-nft)', 'arptables-nft', ['-A', 'INPUT', '-j', 'ACCEPT']],
];

// A bridge rule: nft monitor names it (not ours to watch); xtables-monitor prints it as the
// same empty EVENT line as the native notrack above, so there it wakes too (on purpose).
const BRIDGE: [string, string, readonly string[]] = ['a bridge rule (ebtables-nft)', 'ebtables-nft', ['-A', 'FORWARD', '-j', 'ACCEPT']];
(tool === 'nft-monitor' ? UNRELATED : RELEVANT).push(BRIDGE);

for (const [what, file, args] of RELEVANT) {
  test(`wakes: ${what}`, async () => {
    if (file === 'iptables-nft-restore') {
      const gen = newgens();
      const before = wakes.length;
      ns.check(file, ['--noflush'], { input: '*nat\n:IMDS-GUARD - [0:0]\n-A IMDS-GUARD -j RETURN\nCOMMIT\n' });
      await waitUntil('no NEWGEN for the restore', () => newgens() > gen);
      assert.ok(wakes.length > before, raw.slice(-5).join('\n'));
      return;
    }
    const got = await change(file, args);
    // A change nft monitor places in a native table (made with nft) asks for a full read.
    const reason = tool === 'nft-monitor' && file === 'nft' ? 'netfilter-native' : 'netfilter-change';
    assert.ok(got.length > 0 && got.every((r) => r === reason), `${what}: ${JSON.stringify(got)}\n${raw.slice(-5).join('\n')}`);
  });
}

for (const [what, file, args] of UNRELATED) {
  test(`does not wake: ${what}`, async () => {
    assert.deepEqual(await change(file, args), [], raw.slice(-5).join('\n'));
  });
}

test('reading the tables (what every pass does) makes no event at all', async () => {
  const gen = newgens();
  for (const tool of ['iptables-nft-save', 'ip6tables-nft-save']) ns.check(tool, ['-t', 'nat']);
  // A marker transaction: once its NEWGEN is in, anything the reads caused would be too.
  await change('iptables-nft', ['-t', 'nat', '-A', 'DOCKER', '-j', 'RETURN']);
  assert.equal(newgens(), gen + 1);
});

test('a killed monitor is restarted, asks for a pass, and sees changes again', async () => {
  const first = pids.at(-1)!;
  const before = wakes.length;
  process.kill(first, 'SIGKILL');
  await waitUntil('no restart', () => pids.length > 1 && wakes.slice(before).includes('netfilter-monitor-restarted'), 10_000);
  // Listening again: a change shows up (retried, since the new monitor says nothing when ready).
  await waitUntil('the restarted monitor reported nothing', () => {
    ns.run('iptables-nft', ['-t', 'nat', '-A', 'PREROUTING', '-j', 'RETURN']);
    return wakes.slice(before).includes('netfilter-change');
  });
});

test('our own IPv6 rule (a tcp match, which kills xtables-monitor 1.8.9) wakes the runner, and the monitor listens again', async () => {
  const before = wakes.length;
  ns.check('ip6tables-nft', ['-t', 'nat', '-A', 'PREROUTING', '-d', 'fd00:ec2::254', '-p', 'tcp', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '1']);
  await waitUntil('no wake-up for the IPv6 rule', () => wakes.slice(before).includes('netfilter-change'));
  const after6 = wakes.length;
  await waitUntil('the monitor never reported a change again', () => {
    ns.run('iptables-nft', ['-t', 'nat', '-A', 'PREROUTING', '-j', 'RETURN']);
    return wakes.slice(after6).includes('netfilter-change');
  });
});

test('stop ends the monitor process: none is left behind', async () => {
  const last = pids.at(-1)!;
  watcher.stop();
  await waitUntil(`monitor pid ${last} still running after stop`, () => !existsSync(`/proc/${last}`) || /^State:\s+Z/m.test(String(ns.run('cat', [`/proc/${last}/status`]).stdout)));
});
}
