import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { LAB_NETWORKS, type Lab, labAvailable, startLab } from '../helpers/lab.js';

/**
 * The lab is real: containers on every kind of Docker network it offers reach the fake
 * metadata server, the way they would reach a cloud's on an unprotected host, while
 * this machine's own namespace is never touched and teardown leaves nothing behind.
 * Without these passing, an e2e "blocked" result could mean "the lab never worked".
 */
const NAME = 'e2elab';
const available = labAvailable();
const skip = available.ok ? false : available.why ?? true;

/** This machine's nat rules as iptables-save prints them, minus comments and counters. */
function rootNat(tool: 'iptables-save' | 'ip6tables-save'): string {
  // Read-only: a save never creates a table with the nft backend, and the lab only reads here.
  const r = spawnSync(tool, ['-t', 'nat'], { encoding: 'utf8' });
  if (r.error) return `(${tool} unavailable)`;
  return String(r.stdout)
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');
}

function ourNetns(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return String(r.stdout).split('\n').filter((l) => l.startsWith(`imdsg-${NAME}-`));
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m === dir || m.startsWith(`${dir}/`));
}

/** Running, not merely a zombie waiting for this machine's init to reap it. */
function running(pid: number): boolean {
  try {
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

let lab: Lab | undefined;
let natBefore = { v4: '', v6: '' };

before(async () => {
  if (skip !== false) return;
  natBefore = { v4: rootNat('iptables-save'), v6: rootNat('ip6tables-save') };
  lab = await startLab(NAME);
});

// The teardown test below normally does this; here it also runs after a failure.
after(async () => {
  await lab?.down();
});

function theLab(): Lab {
  assert.ok(lab, 'the lab did not come up');
  return lab;
}

for (const network of LAB_NETWORKS) {
  test(`a container on ${network} reads the fake role credentials from 169.254.169.254`, { skip }, async () => {
    const p = await theLab().probe(network);
    assert.ok(p.gotCredentials, `no credentials through ${network}:\n${p.output}`);
    assert.match(p.output, /"AccessKeyId": "ASIALABFAKE"/);
    assert.equal(p.refused, false);
  });
}

test('a container on an IPv6 user network reads the fake role credentials from [fd00:ec2::254]', { skip }, async (t) => {
  const l = theLab();
  // The server answers IPv6 only where the kernel let the lab set the address (scripts/lab up).
  if (!existsSync(`${l.dir}/httpd6.pid`) && process.env.CI !== 'true') return t.skip('the lab came up without IPv6');
  const net = await l.docker(['network', 'create', '--ipv6', '--subnet', 'fd00:dead::/64', 'lab-v6']);
  assert.equal(net.code, 0, net.stderr);
  t.after(async () => void (await l.docker(['network', 'rm', 'lab-v6'])));
  const p = await l.probe6('lab-v6');
  assert.ok(p.gotCredentials, `no credentials over IPv6:\n${p.output}`);
  assert.equal(p.refused, false);
});

test('the lab namespaces have no route off the machine', { skip }, async () => {
  const l = theLab();
  for (const ns of [l.netns, l.mdNetns]) {
    for (const family of ['-4', '-6']) {
      const r = spawnSync('ip', ['-n', ns, family, 'route', 'show', 'default'], { encoding: 'utf8' });
      assert.equal(r.status, 0, String(r.stderr));
      assert.equal(String(r.stdout).trim(), '', `${ns} has a default route (${family})`);
    }
  }
  // The custom bridge name really is a bridge of the lab's host, not of this machine.
  const link = await l.inHost('ip', ['-o', 'link', 'show', 'labcustom0']);
  assert.equal(link.code, 0, link.stderr);
});

test('a probe tells a refused connection from an open endpoint', { skip }, async (t) => {
  const l = theLab();
  // Port 9 of the lab host is closed, so a redirect there is answered with a reset:
  // the shape of a blocked endpoint, made here with a rule of the lab's own namespace.
  const rule = ['-p', 'tcp', '-d', '169.254.169.254/32', '--dport', '80', '-j', 'REDIRECT', '--to-ports', '9'];
  const add = await l.inHost('iptables', ['-t', 'nat', '-I', 'PREROUTING', '1', ...rule]);
  assert.equal(add.code, 0, add.stderr);
  t.after(async () => void (await l.inHost('iptables', ['-t', 'nat', '-D', 'PREROUTING', ...rule])));
  const blocked = await l.probe('bridge');
  assert.equal(blocked.gotCredentials, false, blocked.output);
  assert.equal(blocked.refused, true, blocked.output);
});

test('after restart-docker the daemon answers and the overlay still carries a probe', { skip }, async () => {
  const l = theLab();
  await l.restartDocker();
  const info = await l.docker(['info', '--format', '{{.Swarm.LocalNodeState}}']);
  assert.equal(info.stdout.trim(), 'active', info.stderr);
  const p = await l.probe('lab-overlay');
  assert.ok(p.gotCredentials, p.output);
});

test('teardown leaves no namespace, daemon or mount, and this machine\'s nat table is unchanged', { skip }, async () => {
  const l = theLab();
  const dockerdPid = Number(readFileSync(`${l.dir}/docker.pid`, 'utf8').trim());
  assert.ok(running(dockerdPid), 'dockerd was not running before teardown');
  await l.down();
  assert.deepEqual(ourNetns(), []);
  assert.equal(running(dockerdPid), false, `dockerd ${dockerdPid} still runs`);
  const strays = spawnSync('pgrep', ['-af', l.dir], { encoding: 'utf8' });
  assert.equal(String(strays.stdout).trim(), '', 'processes started for the lab remain');
  assert.deepEqual(mountsUnder(l.dir), []);
  assert.equal(existsSync(l.dir), false);
  assert.equal(rootNat('iptables-save'), natBefore.v4);
  assert.equal(rootNat('ip6tables-save'), natBefore.v6);
});
