import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { agentFiles, cliInLab, hostArgs, labIptables } from '../helpers/agent.js';
import { ensureBuilt } from '../helpers/cli.js';
import { type Lab, labAvailable, startLab } from '../helpers/lab.js';

/**
 * Bypasses that skip NAT entirely, with real containers: an untracked packet never meets
 * the nat rule, so only the filter backstop (IG-110, IMDS-GUARD-FWD) stands between a
 * container and the metadata server. Each bypass (a raw-table CT --notrack through
 * iptables, a native nftables table's notrack before dstnat) is shown to be real (with
 * the backstop chain flushed, a container's SYN skips the nat rule and reaches the fake
 * server with its own address), to be audited (FAIL, with the rule as evidence), and to be
 * refused while the backstop is in place. `apply` (not the agent, which would repair the
 * control's missing jump at once) sets up the protection.
 */
const available = labAvailable();
const skip = available.ok ? false : (available.why ?? true);
let lab: Lab | undefined;
const theLab = (): Lab => {
  assert.ok(lab, 'the lab did not come up');
  return lab;
};

before(async () => {
  if (skip !== false) return;
  ensureBuilt();
  lab = await startLab('e2ebypass');
});
after(async () => {
  await lab?.down();
});

const cli = async (args: readonly string[]) => {
  const l = theLab();
  return cliInLab(l, [...args, ...hostArgs(l, agentFiles(l.dir))]);
};

interface AuditFinding {
  id: string;
  kind: string;
  status: string;
  evidence: string[];
}

async function audit(): Promise<{ code: number; protected: boolean; findings: AuditFinding[] }> {
  const r = await cli(['audit', '--format', 'json']);
  const report = JSON.parse(r.stdout) as { protected: boolean; findings: AuditFinding[] };
  return { code: r.code, ...report };
}

// The backstop taken away for a control, and put back by apply (which repairs it even
// while a bypass it cannot repair makes it exit 1).
const dropBackstop = (l: Lab) => labIptables(l, ['-t', 'filter', '-F', 'IMDS-GUARD-FWD']);
const restoreBackstop = async () => void (await cli(['apply']));
const RAW_NOTRACK = ['-t', 'raw', '-I', 'PREROUTING', '1', '-d', '169.254.169.254/32', '-p', 'tcp', '-j', 'CT', '--notrack'];
const NATIVE_NOTRACK = 'table inet igbypass { chain pre { type filter hook prerouting priority -300; policy accept; ip daddr 169.254.169.254 tcp dport 80 notrack; }; }';

/**
 * SYNs to the metadata server that arrive in its namespace with a container's own source
 * address: a packet that skipped NAT (our REDIRECT, and Docker's MASQUERADE, which would
 * have made the source the lab host's). Counted by a rule in the fake server's namespace.
 */
const COUNT = ['INPUT', '-s', '172.16.0.0/12', '-d', '169.254.169.254/32', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '--syn', '-m', 'comment', '--comment', 'igbypass-count'];
function inMd(args: readonly string[]): string {
  const r = spawnSync('nsenter', [`--net=/run/netns/${theLab().mdNetns}`, 'iptables', '-w', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, String(r.stderr));
  return String(r.stdout);
}
function untrackedSyns(): number {
  const line = inMd(['-t', 'filter', '-S', 'INPUT', '-v']).split('\n').find((l) => l.includes('igbypass-count'));
  const m = / -c (\d+) \d+/.exec(line ?? '');
  assert.ok(m, `no counting rule in the metadata namespace: ${line}`);
  return Number(m[1]);
}

interface Bypass {
  readonly what: string;
  readonly check: string;
  readonly kind: string;
  readonly evidence: RegExp;
  add(l: Lab): Promise<void>;
  remove(l: Lab): Promise<void>;
}

const BYPASSES: readonly Bypass[] = [
  {
    what: 'a raw-table CT --notrack for the endpoint (iptables)',
    check: 'IG-305',
    kind: 'bypass-notrack',
    evidence: /^-A PREROUTING -d 169\.254\.169\.254\/32 -p tcp -j CT --notrack$/,
    add: (l) => labIptables(l, RAW_NOTRACK),
    remove: (l) => labIptables(l, ['-t', 'raw', '-D', 'PREROUTING', ...RAW_NOTRACK.slice(5)]),
  },
  {
    what: 'a native nftables notrack before dstnat (inet table, priority -300)',
    check: 'IG-306',
    kind: 'bypass-nft',
    evidence: /^pre: ip daddr 169\.254\.169\.254 tcp dport 80 notrack # handle \d+$/,
    async add(l) {
      const r = await l.inHost('nft', ['-f', '-'], { input: `${NATIVE_NOTRACK}\n` });
      assert.equal(r.code, 0, r.stderr);
    },
    async remove(l) {
      const r = await l.inHost('nft', ['delete', 'table', 'inet', 'igbypass']);
      assert.equal(r.code, 0, r.stderr);
    },
  },
];

describe('bypasses that skip NAT, with a container on the default bridge', { skip }, () => {
  before(async () => {
    if (skip !== false) return;
    const r = await cli(['apply']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    inMd(['-I', ...COUNT]);
  });
  after(() => {
    if (lab !== undefined) inMd(['-D', ...COUNT]);
  });

  test('control: with the nat rule alone (the backstop chain flushed) a container is refused (test/e2e/lab shows it reads the credentials without protection)', async () => {
    const l = theLab();
    await dropBackstop(l);
    try {
      const p = await l.probe('bridge');
      assert.ok(p.refused && !p.gotCredentials, `the nat rule alone did not refuse:\n${p.output}`);
    } finally {
      await restoreBackstop();
    }
  });

  for (const b of BYPASSES) {
    test(`${b.what}: real (it skips the nat rule), audited as FAIL ${b.check} with the rule, and refused by the backstop`, async (t) => {
      const l = theLab();
      await b.add(l);
      let present = true;
      t.after(async () => {
        if (present) await b.remove(l);
      });
      // Audited: FAIL, not protected, the rule as evidence.
      const a = await audit();
      assert.equal(a.code, 1);
      assert.equal(a.protected, false);
      const found = a.findings.filter((f) => f.id === b.check && f.status === 'fail');
      assert.deepEqual(found.map((f) => f.kind), [b.kind], JSON.stringify(a.findings));
      assert.ok(found[0]!.evidence.some((e) => b.evidence.test(e)), JSON.stringify(found[0]!.evidence));
      // Refused by the backstop while it stands: nothing reaches the server.
      const before = untrackedSyns();
      const blocked = await l.probe('bridge');
      assert.ok(blocked.refused && !blocked.gotCredentials, `the backstop did not refuse:\n${blocked.output}`);
      assert.equal(untrackedSyns(), before, 'a SYN reached the metadata server past the backstop');
      // Real: with the backstop chain flushed, the container's SYN skips the nat rule
      // (still in place) and reaches the server with the container's own address. (Its
      // reply, a SYN-ACK conntrack never saw a SYN for, is then dropped by Docker's FORWARD
      // policy on this host; a host that accepts it hands out the credentials.)
      await dropBackstop(l);
      try {
        const open = await l.probe('bridge');
        assert.ok(untrackedSyns() > before, `no SYN skipped the nat rule:\n${open.output}`);
        assert.equal(open.refused, false, `refused without the backstop, so the bypass did not skip the nat rule:\n${open.output}`);
      } finally {
        await restoreBackstop();
      }
      await b.remove(l);
      present = false;
      const clean = await audit();
      assert.deepEqual(clean.findings.filter((f) => f.status === 'fail'), [], 'the bypass removed: no failure left');
      assert.equal(clean.protected, true);
    });
  }
});
