import assert from 'node:assert/strict';
import { existsSync, rmSync, statSync } from 'node:fs';
import { test } from 'node:test';
import { type Agent, LAB_IMAGE, agentSuite, filterSave, labIptables, mustDocker, natSave, preroutingOf, restoresOf, rulesOf, timedProbe } from '../helpers/agent.js';
import { JUMP_LINE } from '../helpers/cli.js';
import type { Lab } from '../helpers/lab.js';

/**
 * Someone else changes the firewall while the agent runs: each change is one drift
 * event of the right kind, table and chain in the agent's log, the next drift check
 * repairs it, the audit passes again, and containers are refused again (traffic). The
 * nat catch-all, the filter FORWARD backstop and the filter OUTPUT chain for host-network
 * containers are each tampered with. Swarm's own change (its DOCKER-INGRESS jump at the
 * top of PREROUTING) is not drift and starts no fight.
 */
const suite = agentSuite('e2eagent-drift');
const { skip } = suite;

async function assertAuditPasses(a: Agent): Promise<void> {
  const r = await a.cli('audit', ['--format', 'json']);
  const report = JSON.parse(r.stdout) as { protected: boolean; findings: { kind: string; status: string; family?: string; chain?: string }[] };
  const failing = report.findings.filter((f) => f.status === 'fail').map((f) => `${f.family ?? '-'} ${f.chain ?? '-'} ${f.kind}`);
  assert.deepEqual(failing, [], 'audit found failures');
  assert.equal(report.protected, true);
  assert.equal(r.code, 0, r.stderr);
}

const ENDPOINT = ['-d', '169.254.169.254', '-p', 'tcp'];
const ACCEPT_ENDPOINT = [...ENDPOINT, '-j', 'ACCEPT'];
const JUMP = (chain: string): string[] => ['-m', 'comment', '--comment', 'imds-guard: metadata endpoint protection', '-j', chain];
const FWD_JUMP_LINE = '-A FORWARD -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD-FWD';
const OUT_JUMP_LINE = '-A OUTPUT -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD-OUT';

async function refused(l: Lab, network: string): Promise<void> {
  const p = await timedProbe(l, network);
  assert.ok(p.refused && !p.gotCredentials, `${network} was not refused after the repair:\n${p.output}`);
}

interface Tamper {
  readonly what: string;
  readonly kinds: readonly string[];
  /** The table and owned chain the drift events name (none for the boot script). */
  readonly at?: { readonly table: 'nat' | 'filter'; readonly chain: string };
  tamper(l: Lab, a: Agent): Promise<void>;
  /** What must hold once repaired, besides the audit passing. */
  check(l: Lab, a: Agent): Promise<void>;
  cleanup?(l: Lab): Promise<void>;
}

const NAT = { table: 'nat', chain: 'IMDS-GUARD' } as const;
const FWD = { table: 'filter', chain: 'IMDS-GUARD-FWD' } as const;
const OUT = { table: 'filter', chain: 'IMDS-GUARD-OUT' } as const;

const TAMPERS: readonly Tamper[] = [
  {
    what: 'the nat IMDS-GUARD chain is flushed',
    kinds: ['rule-missing'],
    at: NAT,
    tamper: (l) => labIptables(l, ['-t', 'nat', '-F', 'IMDS-GUARD']),
    async check(l) {
      assert.match(rulesOf(await natSave(l), 'IMDS-GUARD').join('\n'), /^-A IMDS-GUARD -d 169\.254\.169\.254\/32 -p tcp -m tcp --dport 80 .*-j REDIRECT --to-ports 1$/m);
      await refused(l, 'lab-custom');
    },
  },
  {
    what: 'the PREROUTING jump is deleted',
    kinds: ['jump-missing'],
    at: NAT,
    tamper: (l) => labIptables(l, ['-t', 'nat', '-D', 'PREROUTING', ...JUMP('IMDS-GUARD')]),
    async check(l) {
      assert.equal(preroutingOf(await natSave(l))[0], JUMP_LINE);
      await refused(l, 'bridge');
    },
  },
  {
    what: 'an ACCEPT for the endpoint is inserted above the PREROUTING jump',
    kinds: ['jump-not-first', 'foreign-undermining'],
    at: NAT,
    tamper: (l) => labIptables(l, ['-t', 'nat', '-I', 'PREROUTING', '1', ...ACCEPT_ENDPOINT]),
    async check(l) {
      // The jump is back on top; the foreign rule itself is left alone (below it, harmless).
      const pre = preroutingOf(await natSave(l));
      assert.equal(pre[0], JUMP_LINE);
      assert.equal(pre[1], '-A PREROUTING -d 169.254.169.254/32 -p tcp -j ACCEPT');
      await refused(l, 'bridge');
    },
    cleanup: (l) => labIptables(l, ['-t', 'nat', '-D', 'PREROUTING', ...ACCEPT_ENDPOINT]),
  },
  {
    what: 'the filter backstop chain IMDS-GUARD-FWD is flushed',
    kinds: ['rule-missing'],
    at: FWD,
    tamper: (l) => labIptables(l, ['-t', 'filter', '-F', 'IMDS-GUARD-FWD']),
    async check(l) {
      assert.match(rulesOf(await filterSave(l), 'IMDS-GUARD-FWD').join('\n'), /^-A IMDS-GUARD-FWD -d 169\.254\.169\.254\/32 .*-j REJECT --reject-with tcp-reset$/m);
    },
  },
  {
    what: 'the FORWARD jump is deleted',
    kinds: ['jump-missing'],
    at: FWD,
    tamper: (l) => labIptables(l, ['-t', 'filter', '-D', 'FORWARD', ...JUMP('IMDS-GUARD-FWD')]),
    async check(l) {
      assert.equal(rulesOf(await filterSave(l), 'FORWARD')[0], FWD_JUMP_LINE);
    },
  },
  {
    what: 'the host-network chain IMDS-GUARD-OUT is flushed',
    kinds: ['rule-missing'],
    at: OUT,
    tamper: (l) => labIptables(l, ['-t', 'filter', '-F', 'IMDS-GUARD-OUT']),
    async check(l) {
      assert.match(rulesOf(await filterSave(l), 'IMDS-GUARD-OUT').join('\n'), new RegExp(`-m cgroup --path "?${l.cgroupParent}"? -m comment --comment "imds-guard:[0-9a-f]{12} cgino=\\d+" -j REJECT`));
      await refused(l, 'host');
    },
  },
  {
    what: 'the OUTPUT jump is deleted',
    kinds: ['jump-missing'],
    at: OUT,
    tamper: (l) => labIptables(l, ['-t', 'filter', '-D', 'OUTPUT', ...JUMP('IMDS-GUARD-OUT')]),
    async check(l) {
      assert.equal(rulesOf(await filterSave(l), 'OUTPUT')[0], OUT_JUMP_LINE);
      await refused(l, 'host');
    },
  },
  {
    what: 'an ACCEPT for the endpoint is inserted above the OUTPUT jump',
    kinds: ['jump-not-first', 'foreign-undermining'],
    at: OUT,
    tamper: (l) => labIptables(l, ['-t', 'filter', '-I', 'OUTPUT', '1', ...ACCEPT_ENDPOINT]),
    async check(l) {
      const out = rulesOf(await filterSave(l), 'OUTPUT');
      assert.deepEqual(out.slice(0, 2), [OUT_JUMP_LINE, '-A OUTPUT -d 169.254.169.254/32 -p tcp -j ACCEPT']);
      await refused(l, 'host');
    },
    cleanup: (l) => labIptables(l, ['-t', 'filter', '-D', 'OUTPUT', ...ACCEPT_ENDPOINT]),
  },
  {
    what: 'someone puts an ACCEPT of their own at the top of IMDS-GUARD-OUT',
    kinds: ['rule-unknown'],
    at: OUT,
    tamper: (l) => labIptables(l, ['-t', 'filter', '-I', 'IMDS-GUARD-OUT', '1', ...ACCEPT_ENDPOINT]),
    async check(l) {
      assert.deepEqual(rulesOf(await filterSave(l), 'IMDS-GUARD-OUT').filter((r) => r.endsWith('-j ACCEPT')), []);
      await refused(l, 'host');
    },
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
  test(`${c.what}: logged as drift ${c.kinds.join(' + ')}${c.at === undefined ? '' : ` in ${c.at.table} ${c.at.chain}`}, repaired by the next pass, audit passes, traffic refused again`, { skip }, async (t) => {
    const l = suite.lab();
    const a = await suite.agent();
    if (c.cleanup !== undefined) t.after(() => c.cleanup!(l));
    await assertAuditPasses(a);
    const from = a.mark();
    await c.tamper(l, a);
    for (const kind of c.kinds) {
      const d = await a.waitFor(`a drift event of kind ${kind}`, (x) => x.event === 'drift' && x.kind === kind && (c.at === undefined || (x.table === c.at.table && x.chain === c.at.chain)), { from, timeoutMs: 5_000 });
      if (c.at !== undefined) assert.equal(d.family, 'ipv4', JSON.stringify(d));
    }
    const repaired = await a.waitFor('the repair', (x) => x.event === 'repaired' && c.kinds.every((k) => (x.kinds as string[]).includes(k)), { from, timeoutMs: 5_000 });
    // Whatever woke the pass repairs it (level-triggered): usually the drift check, but a
    // Docker event from the lab arriving first is just as good (seen once on a clean clone).
    assert.ok((repaired.reasons as string[]).length > 0, JSON.stringify(repaired));
    // A filter tamper is repaired in the filter table alone: the nat table is not written.
    if (c.at?.table === 'filter') assert.deepEqual(restoresOf(a, from, 'nat'), [], 'a filter repair wrote the nat table');
    await c.check(l, a);
    await assertAuditPasses(a);
    for (const kind of c.kinds) assert.ok((a.state()?.driftCounts[kind] ?? 0) >= 1, `the state file does not count ${kind}`);
  });
}

test('after all that tampering, containers on bridges and on the host network are still refused', { skip }, async () => {
  for (const n of ['bridge', 'lab-custom', 'host']) await refused(suite.lab(), n);
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
  assert.deepEqual(restoresOf(a, from, 'nat'), [], 'the agent rewrote the nat table');
  const pre = preroutingOf(await natSave(l));
  assert.deepEqual(pre.slice(0, 2), [INGRESS_JUMP, JUMP_LINE], 'someone moved a jump');
  await assertAuditPasses(a);
  for (const n of ['bridge', 'lab-overlay']) {
    const p = await timedProbe(l, n);
    assert.ok(p.refused && !p.gotCredentials, `${n}:\n${p.output}`);
  }
});
