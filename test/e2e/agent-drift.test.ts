import assert from 'node:assert/strict';
import { existsSync, rmSync, statSync } from 'node:fs';
import { test } from 'node:test';
import { type Agent, LAB_IMAGE, type LogLine, agentSuite, coveredThroughSet, labIpset, labIptables, mustDocker, natSave, preroutingOf, setSave, timedProbe } from '../helpers/agent.js';
import { JUMP_LINE } from '../helpers/cli.js';
import type { Lab } from '../helpers/lab.js';

/**
 * Someone else changes the firewall while the agent runs: each change is one drift
 * event of the right kind in the agent's log, the next drift check repairs it, and the
 * audit passes again. Swarm's own change (its DOCKER-INGRESS jump at the top of
 * PREROUTING) is not drift and starts no fight.
 */
const suite = agentSuite('e2eagent-drift');
const { skip } = suite;

async function assertAuditPasses(a: Agent): Promise<void> {
  const r = await a.cli('audit', ['--format', 'json']);
  const report = JSON.parse(r.stdout) as { protected: boolean; findings: { kind: string; status: string; family?: string }[] };
  const failing = report.findings.filter((f) => f.status === 'fail').map((f) => `${f.family ?? '-'} ${f.kind}`);
  assert.deepEqual(failing, [], 'audit found failures');
  assert.equal(report.protected, true);
  assert.equal(r.code, 0, r.stderr);
}

const ACCEPT_ABOVE = ['-p', 'tcp', '-d', '169.254.169.254', '-j', 'ACCEPT'];

interface Tamper {
  readonly what: string;
  readonly kinds: readonly string[];
  tamper(l: Lab, a: Agent): Promise<void>;
  /** What must hold once repaired, besides the audit passing. */
  check?(l: Lab, a: Agent): Promise<void>;
  cleanup?(l: Lab): Promise<void>;
}

const TAMPERS: readonly Tamper[] = [
  {
    what: 'the IMDS-GUARD chain is flushed',
    kinds: ['rule-missing'],
    tamper: (l) => labIptables(l, ['-t', 'nat', '-F', 'IMDS-GUARD']),
    async check(l) {
      assert.ok(await coveredThroughSet(l, 'labcustom0'), 'labcustom0 is not covered through the set');
    },
  },
  {
    what: "the custom bridge's member is deleted from the set",
    kinds: ['set-member-missing'],
    tamper: (l) => labIpset(l, ['del', 'imds-guard-4', '0.0.0.0/0,labcustom0']),
    async check(l) {
      assert.ok(await coveredThroughSet(l, 'labcustom0'), 'labcustom0 is not a member again');
    },
  },
  {
    what: 'someone adds a member of their own to the set',
    kinds: ['set-member-unknown'],
    tamper: (l) => labIpset(l, ['add', 'imds-guard-4', '0.0.0.0/0,eth9']),
    async check(l) {
      assert.doesNotMatch(await setSave(l), /eth9/);
    },
  },
  {
    what: 'the PREROUTING jump is deleted',
    kinds: ['jump-missing'],
    tamper: (l) => labIptables(l, ['-t', 'nat', '-D', 'PREROUTING', '-m', 'comment', '--comment', 'imds-guard: metadata endpoint protection', '-j', 'IMDS-GUARD']),
    async check(l) {
      assert.equal(preroutingOf(await natSave(l))[0], JUMP_LINE);
    },
  },
  {
    what: 'an ACCEPT for the endpoint is inserted above the jump',
    kinds: ['jump-not-first', 'foreign-undermining'],
    tamper: (l) => labIptables(l, ['-t', 'nat', '-I', 'PREROUTING', '1', ...ACCEPT_ABOVE]),
    async check(l) {
      // The jump is back on top; the foreign rule itself is left alone (below it, harmless).
      const pre = preroutingOf(await natSave(l));
      assert.equal(pre[0], JUMP_LINE);
      assert.equal(pre[1], '-A PREROUTING -d 169.254.169.254/32 -p tcp -j ACCEPT');
    },
    cleanup: (l) => labIptables(l, ['-t', 'nat', '-D', 'PREROUTING', ...ACCEPT_ABOVE]),
  },
  {
    what: 'the boot script is deleted',
    kinds: ['boot-script-missing'],
    tamper: async (_l, a) => rmSync(a.files.bootScript),
    async check(_l, a) {
      assert.ok(existsSync(a.files.bootScript), 'the boot script was not written again');
      assert.equal(statSync(a.files.bootScript).mode & 0o111, 0o111, 'the boot script is not executable');
    },
  },
];

for (const c of TAMPERS) {
  test(`${c.what}: logged as drift ${c.kinds.join(' + ')}, repaired by the next pass, audit passes again`, { skip }, async (t) => {
    const l = suite.lab();
    const a = await suite.agent();
    if (c.cleanup !== undefined) t.after(() => c.cleanup!(l));
    await assertAuditPasses(a);
    const from = a.mark();
    await c.tamper(l, a);
    for (const kind of c.kinds) {
      const d = await a.waitFor(`a drift event of kind ${kind}`, (x) => x.event === 'drift' && x.kind === kind, { from, timeoutMs: 5_000 });
      if (kind !== 'boot-script-missing') assert.equal(d.family, 'ipv4', JSON.stringify(d));
    }
    const repaired = await a.waitFor('the repair', (x) => x.event === 'repaired' && c.kinds.every((k) => (x.kinds as string[]).includes(k)), { from, timeoutMs: 5_000 });
    // Whatever woke the pass repairs it (level-triggered): usually the drift check, but a
    // Docker event from the lab arriving first is just as good (seen once on a clean clone).
    assert.ok((repaired.reasons as string[]).length > 0, JSON.stringify(repaired));
    await c.check?.(l, a);
    await assertAuditPasses(a);
    for (const kind of c.kinds) assert.ok((a.state()?.driftCounts[kind] ?? 0) >= 1, `the state file does not count ${kind}`);
  });
}

test('after all that tampering, containers are still refused', { skip }, async () => {
  for (const n of ['bridge', 'lab-custom']) {
    const p = await timedProbe(suite.lab(), n);
    assert.ok(p.refused && !p.gotCredentials, `${n}:\n${p.output}`);
  }
});

const INGRESS_JUMP = '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS';

/**
 * libnetwork's programIngress (Docker 20.10) for one published TCP port, nat part:
 * chain, RETURN, jumps inserted at the top of OUTPUT and PREROUTING, the port's DNAT to
 * the ingress sandbox. Used only where dockerd cannot do it itself: without IPVS in the
 * kernel its load balancer set-up stops before programIngress.
 */
async function programIngressLikeDocker(l: Lab, port: number): Promise<void> {
  const gw = (await mustDocker(l, ['network', 'inspect', 'docker_gwbridge', '--format', '{{(index .Containers "ingress-sbox").IPv4Address}}'])).replace(/\/\d+$/, '');
  assert.match(gw, /^\d+\.\d+\.\d+\.\d+$/, 'no ingress-sbox on docker_gwbridge');
  await labIptables(l, ['-t', 'nat', '-N', 'DOCKER-INGRESS']);
  await labIptables(l, ['-t', 'nat', '-A', 'DOCKER-INGRESS', '-j', 'RETURN']);
  for (const chain of ['OUTPUT', 'PREROUTING']) await labIptables(l, ['-t', 'nat', '-I', chain, '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER-INGRESS']);
  await labIptables(l, ['-t', 'nat', '-I', 'DOCKER-INGRESS', '-p', 'tcp', '--dport', String(port), '-j', 'DNAT', '--to-destination', `${gw}:${port}`]);
}

test('a Swarm service publishing a port puts DOCKER-INGRESS above the jump: no drift, no rewrite over several checks, audit passes, containers still refused', { skip }, async (t) => {
  const l = suite.lab();
  const a = await suite.agent();
  const from = a.mark();
  await mustDocker(l, ['service', 'create', '--detach', '--name', 'web', '-p', '8080:80', '--no-resolve-image', LAB_IMAGE, 'httpd', '-f', '-p', '80']);
  t.after(async () => void (await l.docker(['service', 'rm', 'web'])));
  let state = '';
  for (let i = 0; i < 300 && !state.startsWith('Running'); i++) {
    state = await mustDocker(l, ['service', 'ps', 'web', '--filter', 'desired-state=running', '--format', '{{.CurrentState}}']);
    if (!state.startsWith('Running')) await new Promise((r) => setTimeout(r, 200));
  }
  assert.match(state, /^Running/, 'the service task did not start');

  const ipvs = existsSync('/proc/sys/net/ipv4/vs');
  let save = await natSave(l);
  for (let i = 0; ipvs && i < 50 && !save.includes(INGRESS_JUMP); i++) {
    await new Promise((r) => setTimeout(r, 200));
    save = await natSave(l);
  }
  if (!ipvs) {
    t.diagnostic('this kernel has no IPVS, so dockerd cannot set up the ingress load balancer; its nat rules are added here the way libnetwork adds them');
    await programIngressLikeDocker(l, 8080);
    save = await natSave(l);
  }
  assert.equal(preroutingOf(save)[0], INGRESS_JUMP, 'DOCKER-INGRESS is not at the top of PREROUTING');

  // Several drift checks after the ingress jump went in, each a full observe-and-compare.
  const checked = a.mark();
  let passes = 0;
  await a.waitFor('four drift checks', (x) => x.event === 'reconciled' && (x.reasons as string[]).includes('drift-check') && ++passes >= 4, { from: checked, timeoutMs: 10_000 });
  const sinceService = a.lines().slice(from);
  assert.deepEqual(sinceService.filter((x) => x.event === 'drift'), [], 'Swarm\'s ingress set-up was reported as drift');
  assert.deepEqual(sinceService.filter((x: LogLine) => x.msg === 'applied nat transaction'), [], 'the agent rewrote the nat table');
  const pre = preroutingOf(await natSave(l));
  assert.deepEqual(pre.slice(0, 2), [INGRESS_JUMP, JUMP_LINE], 'someone moved a jump');
  await assertAuditPasses(a);
  for (const n of ['bridge', 'lab-overlay']) {
    const p = await timedProbe(l, n);
    assert.ok(p.refused && !p.gotCredentials, `${n}:\n${p.output}`);
  }
});
