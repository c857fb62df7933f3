import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { startBareAgent } from '../helpers/bare-agent.js';
import { ensureBuilt, freshHost, parseAudit, runCli } from '../helpers/cli.js';
import { type Backend, createNetns } from '../helpers/netns.js';

before(() => ensureBuilt());

/**
 * Native nftables tables (someone else's, not iptables-nft's) that skip or override our
 * nat rule, against the built CLI and real nft in a throwaway namespace: audit reads
 * `nft -j list ruleset` and fails IG-306 with the rule as nft prints it; a harmless native
 * table is no finding; once the table is gone, audit passes.
 */
const NOTRACK = 'table inet evil { chain pre { type filter hook prerouting priority -300; policy accept; ip daddr 169.254.169.254 notrack; }; }';
const DNAT = 'table ip evilnat { chain pre { type nat hook prerouting priority -150; policy accept; ip daddr 169.254.169.254 tcp dport 80 dnat to 10.9.9.9:8080; }; }';
const HARMLESS = [
  // after dstnat: our nat rule has redirected the connection already
  'table inet late { chain pre { type filter hook prerouting priority 0; policy accept; ip daddr 169.254.169.254 notrack; }; }',
  // before dstnat, but another address
  'table inet other { chain pre { type filter hook prerouting priority -300; policy accept; ip daddr 10.0.0.0/8 notrack; }; }',
  // a nat chain after ours
  'table ip natlate { chain pre { type nat hook prerouting priority -90; policy accept; ip daddr 169.254.169.254 tcp dport 80 dnat to 10.9.9.9; }; }',
].join('\n');

function host(t: { after(fn: () => void): void }, backend: Backend) {
  const { ns, host: h } = freshHost(t, 'nft-bypass');
  const cli = (...args: string[]) => runCli(ns, h, [...args, '--backend', backend, '--boot-script', 'never', ...h.args]);
  const apply = cli('apply');
  assert.equal(apply.code, 0, apply.stdout + apply.stderr);
  const nft = (script: string) => ns.check('nft', ['-f', '-'], { input: `${script}\n` });
  return { ns, cli, nft };
}

const nftFindings = (r: ReturnType<typeof parseAudit>) => r.findings.filter((f) => f.id === 'IG-306');

for (const backend of ['nft', 'legacy'] as const) {
  describe(`native nftables bypasses with --backend ${backend}`, () => {
    test('a native notrack of the endpoint at priority -300 fails IG-306 with the rule, its table, chain and priority, and a delete command; removing the table passes', (t) => {
      const { cli, nft } = host(t, backend);
      assert.equal(cli('audit').code, 0, 'protected before');
      nft(NOTRACK);
      const audit = cli('audit', '--format', 'json');
      assert.equal(audit.code, 1, audit.stdout + audit.stderr);
      const report = parseAudit(audit);
      assert.equal(report.protected, false);
      const found = nftFindings(report);
      assert.equal(found.length, 1, JSON.stringify(found));
      const f = found[0]!;
      assert.equal(f.kind, 'bypass-nft');
      assert.equal(f.status, 'fail');
      assert.equal(f.family, 'ipv4');
      assert.equal(f.table, 'inet evil');
      assert.equal(f.chain, 'pre');
      assert.match(f.message, /priority -300/);
      assert.match(f.message, /filter backstop \(IG-110\) still refuses it/);
      assert.equal(f.evidence[0], 'table inet evil chain pre { type filter hook prerouting priority -300; }');
      assert.match(f.evidence[1] ?? '', /^pre: ip daddr 169\.254\.169\.254 notrack # handle \d+$/);
      assert.match(f.remediation ?? '', /^nft delete rule inet evil pre handle \d+$/);
      // The text report shows it too.
      const text = cli('audit');
      assert.equal(text.code, 1);
      assert.match(text.stdout, /^\[FAIL\] IG-306 ipv4\/inet evil a native nftables chain/m);
      // apply cannot repair someone else's table: it exits 1 and says it needs the operator.
      const apply = cli('apply');
      assert.equal(apply.code, 1, apply.stdout);
      assert.match(apply.stdout, /needs the operator: \[bypass-nft\]/);
      // The printed remediation works.
      const handle = /handle (\d+)$/.exec(f.remediation ?? '')![1]!;
      nft(`delete rule inet evil pre handle ${handle}`);
      assert.equal(cli('audit').code, 0, 'the rule removed: protected');
      nft(`${NOTRACK}\ndelete table inet evil`);
      assert.equal(cli('audit').code, 0, 'the table removed: protected');
    });

    test('a native nat chain doing its own dnat of the endpoint at priority -150 fails IG-306 (critical)', (t) => {
      const { cli, nft } = host(t, backend);
      nft(DNAT);
      const audit = cli('audit', '--format', 'json');
      assert.equal(audit.code, 1, audit.stdout + audit.stderr);
      const found = nftFindings(parseAudit(audit));
      assert.deepEqual(found.map((f) => `${f.status} ${f.severity} ${f.family} ${f.table} ${f.chain}`), ['fail critical ipv4 ip evilnat pre']);
      assert.match(found[0]!.evidence[1] ?? '', /dnat to 10\.9\.9\.9:8080 # handle \d+$/);
      nft('delete table ip evilnat');
      assert.equal(cli('audit').code, 0);
    });

    test('harmless native tables (after dstnat, another address, a nat chain after ours) are no finding', (t) => {
      const { cli, nft } = host(t, backend);
      nft(HARMLESS);
      const audit = cli('audit', '--format', 'json');
      assert.equal(audit.code, 0, audit.stdout + audit.stderr);
      assert.deepEqual(nftFindings(parseAudit(audit)), []);
    });
  });
}

test('apply on a converged nft host (its cheap read) also reads the native tables: it does not call a host with a native bypass protected', (t) => {
  const { cli, nft } = host(t, 'nft');
  nft(NOTRACK);
  const apply = cli('apply');
  assert.equal(apply.code, 1, apply.stdout + apply.stderr);
  assert.doesNotMatch(apply.stdout, /already protected|imds-guard: protected/);
});

test("the running agent (hourly drift check) logs a native bypass as drift from the netfilter monitor's wake-up alone: a change in a native table makes its next pass a full read", async (t) => {
  const ns = createNetns('nft-bypass-agent');
  t.after(() => ns.destroy());
  const agent = startBareAgent(ns, ['--backend', 'nft']);
  t.after(() => agent.stop());
  await agent.waitFor('the agent watching netfilter', (l) => l.event === 'netfilter-watch-started');
  await agent.waitFor('the first install', (l) => l.event === 'installed');
  await agent.waitFor('a converged pass', (l) => l.event === 'reconciled' && l.converged === true);
  const from = agent.logs.length;
  ns.check('nft', ['-f', '-'], { input: `${NOTRACK}\n` });
  const drift = await agent.waitFor('the IG-306 drift line', (l) => l.event === 'drift' && l.check === 'IG-306', { from, timeoutMs: 10_000 });
  assert.equal(drift.kind, 'bypass-nft');
  assert.equal(drift.table, 'inet evil');
  assert.match(String((drift.evidence as string[])[1]), /^pre: ip daddr 169\.254\.169\.254 notrack # handle \d+$/);
  // The pass logs its drift lines first, then its own line.
  const pass = await agent.waitFor('the pass woken by netfilter-native', (l) => (l.event === 'reconciled' || l.event === 'repaired') && Array.isArray(l.reasons) && (l.reasons as string[]).includes('netfilter-native'), { from, timeoutMs: 5_000 });
  assert.equal(pass.reads, 'full');
  // Nothing to repair: the agent leaves someone else's table alone, and logs it once.
  const before = agent.logs.length;
  ns.check('nft', ['add', 'table', 'inet', 'unrelated']);
  await agent.waitFor('the next pass', (l) => l.event === 'reconciled' && (l.reasons as string[]).includes('netfilter-native'), { from: before });
  assert.equal(agent.logs.slice(from).filter((l) => l.event === 'drift').length, 1, 'one drift line while it stays');
  assert.match(ns.check('nft', ['list', 'table', 'inet', 'evil']), /notrack/);
});
