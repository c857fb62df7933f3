import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { FRESH_FILTER, JUMP_LINE, OUT_JUMP_LINE, ensureBuilt, fixture, freshHost, parseAudit, runCli, saveNatFilter, saveTable, tableRules } from '../helpers/cli.js';
import { createTestCgroup } from '../helpers/cgroup.js';
import { type Backend, FRESH_NAT } from '../helpers/netns.js';

before(() => ensureBuilt());

// What iptables-save prints (nat, then filter, minus # lines) for a protected fresh namespace, either backend.
const PROTECTED_V4 = fixture('protected-default.ipv4.save');
const PROTECTED_V6 = fixture('protected-default.ipv6.save');

const JUMP = '-m comment --comment "imds-guard: metadata endpoint protection"';

// The transactions a fresh host gets, one per table and family: each owned chain declared
// and written whole, its jump inserted on top. No interface in any rule: every forwarded
// packet to the endpoint is covered, whatever bridge it came from.
const FIRST_PAYLOADS = {
  ipv4: {
    nat: `*nat
:IMDS-GUARD - [0:0]
-A IMDS-GUARD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:d8b25c267408 -j REDIRECT --to-ports 1
-I PREROUTING 1 ${JUMP} -j IMDS-GUARD
COMMIT
`,
    filter: `*filter
:IMDS-GUARD-FWD - [0:0]
-A IMDS-GUARD-FWD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:525867e4855d -j REJECT --reject-with tcp-reset
-I FORWARD 1 ${JUMP} -j IMDS-GUARD-FWD
COMMIT
`,
  },
  ipv6: {
    nat: `*nat
:IMDS-GUARD - [0:0]
-A IMDS-GUARD -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:ff65be915e6f -j REDIRECT --to-ports 1
-I PREROUTING 1 ${JUMP} -j IMDS-GUARD
COMMIT
`,
    filter: `*filter
:IMDS-GUARD-FWD - [0:0]
-A IMDS-GUARD-FWD -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:91338930fcda -j REJECT --reject-with tcp-reset
-I FORWARD 1 ${JUMP} -j IMDS-GUARD-FWD
COMMIT
`,
  },
} as const;

const SUMMARY = (backend: Backend) => `imds-guard: backend ${backend}; 4 rule(s) hide 2 endpoint(s) from every container`;

for (const backend of ['nft', 'legacy'] as const satisfies readonly Backend[]) {
  describe(`apply with --backend ${backend}`, () => {
    test('apply on a fresh namespace installs the nat catch-all and the filter FORWARD backstop in both families, one restore per table and family, no OUTPUT chain without host-network coverage, and writes the boot script', (t) => {
      const { ns, host } = freshHost(t, 'apply');
      const r = runCli(ns, host, ['apply', '--backend', backend, ...host.args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      const lines = r.stdout.trimEnd().split('\n');
      assert.equal(lines[0], SUMMARY(backend));
      assert.equal(lines.at(-1), 'imds-guard: protected (4 transaction(s))');
      assert.ok(lines.includes('repaired: [jump-missing] ipv4 PREROUTING has no jump to IMDS-GUARD'), r.stdout);
      assert.ok(lines.includes('repaired: [jump-missing] ipv6 FORWARD has no jump to IMDS-GUARD-FWD'), r.stdout);

      assert.deepEqual(host.restores(), [
        { tool: `iptables-${backend}-restore`, payload: FIRST_PAYLOADS.ipv4.nat },
        { tool: `iptables-${backend}-restore`, payload: FIRST_PAYLOADS.ipv4.filter },
        { tool: `ip6tables-${backend}-restore`, payload: FIRST_PAYLOADS.ipv6.nat },
        { tool: `ip6tables-${backend}-restore`, payload: FIRST_PAYLOADS.ipv6.filter },
      ]);
      assert.equal(saveNatFilter(ns, 'ipv4', backend), PROTECTED_V4);
      assert.equal(saveNatFilter(ns, 'ipv6', backend), PROTECTED_V6);
      assert.ok(existsSync(host.bootScript));
      assert.equal(statSync(host.bootScript).mode & 0o777, 0o755);
    });

    test('a second apply on a converged host runs no restore and leaves nat and filter byte for byte as they were', (t) => {
      const { ns, host } = freshHost(t, 'apply');
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      const before = host.restores().length;

      const r = runCli(ns, host, ['apply', '--backend', backend, ...host.args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${SUMMARY(backend)}\nimds-guard: already protected; nothing written\n`);
      assert.equal(host.restores().length, before);
      assert.equal(saveNatFilter(ns, 'ipv4', backend), PROTECTED_V4);
      assert.equal(saveNatFilter(ns, 'ipv6', backend), PROTECTED_V6);
    });

    test('audit after apply says PROTECTED and exits 0: nat protection (IG-101) and the backstop (IG-110) pass in both families', (t) => {
      const { ns, host } = freshHost(t, 'apply');
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      const r = runCli(ns, host, ['audit', '--backend', backend, '--format', 'json', ...host.args]);
      assert.equal(r.code, 0, r.stdout);
      const report = parseAudit(r);
      assert.equal(report.schemaVersion, 1);
      assert.equal(report.protected, true);
      assert.equal(report.backend, backend);
      assert.deepEqual(report.endpoints.list, ['169.254.169.254:80', '[fd00:ec2::254]:80']);
      assert.deepEqual(report.allow, []);
      assert.equal(report.summary.fail, 0);
      const passes = report.findings.filter((f) => f.status === 'pass' && f.id !== 'IG-401').map((f) => `${f.id} ${f.family} ${f.table}/${f.chain} ${f.endpoint ?? '-'}`);
      assert.deepEqual(passes, [
        'IG-201 ipv4 nat/IMDS-GUARD -',
        'IG-101 ipv4 nat/IMDS-GUARD 169.254.169.254:80',
        'IG-201 ipv4 filter/IMDS-GUARD-FWD -',
        'IG-110 ipv4 filter/IMDS-GUARD-FWD 169.254.169.254:80',
        'IG-201 ipv6 nat/IMDS-GUARD -',
        'IG-101 ipv6 nat/IMDS-GUARD [fd00:ec2::254]:80',
        'IG-201 ipv6 filter/IMDS-GUARD-FWD -',
        'IG-110 ipv6 filter/IMDS-GUARD-FWD [fd00:ec2::254]:80',
      ]);

      const text = runCli(ns, host, ['audit', '--backend', backend, ...host.args]);
      assert.equal(text.code, 0);
      assert.match(text.stdout, /^verdict: PROTECTED \(0 fail, 0 warn, 9 pass\)$/m);
    });

    test('--mode report on an unprotected host exits 1, names what is missing and changes nothing', (t) => {
      const { ns, host } = freshHost(t, 'apply');
      const r = runCli(ns, host, ['apply', '--mode', 'report', '--backend', backend, ...host.args]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stdout, /^would repair: \[jump-missing\] ipv4 PREROUTING has no jump to IMDS-GUARD$/m);
      assert.match(r.stdout, /^would repair: \[rule-missing\] ipv6 the backstop for \[fd00:ec2::254\]:80 \(forwarded packets that skipped NAT\): NOT refused, the rule is missing or altered$/m);
      assert.match(r.stdout, /^imds-guard: NOT PROTECTED \(report mode: nothing changed\)$/m);
      assert.deepEqual(host.restores(), []);
      for (const family of ['ipv4', 'ipv6'] as const) {
        assert.equal(saveTable(ns, family, backend, 'nat'), FRESH_NAT);
        assert.equal(saveTable(ns, family, backend, 'filter'), FRESH_FILTER);
      }
      assert.equal(existsSync(host.bootScript), false);
    });

    test('--allow eth9 puts a RETURN for eth9 first in both the nat chain and the FORWARD backstop, in both families', (t) => {
      const { ns, host } = freshHost(t, 'apply');
      const r = runCli(ns, host, ['apply', '--backend', backend, '--allow', 'eth9', ...host.args]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^imds-guard: backend \S+; 8 rule\(s\) hide 2 endpoint\(s\) from every container \(allowed: eth9\)$/m);
      for (const [family, dst] of [['ipv4', '169.254.169.254/32'], ['ipv6', 'fd00:ec2::254/128']] as const) {
        const shape = (chain: string) =>
          tableRules(ns, family, backend, chain === 'IMDS-GUARD' ? 'nat' : 'filter')
            .filter((l) => l.startsWith(`-A ${chain} `))
            .map((l) => l.replace(/imds-guard:[0-9a-f]{12}/, 'imds-guard:ID'));
        assert.deepEqual(shape('IMDS-GUARD'), [
          '-A IMDS-GUARD -i eth9 -m comment --comment "imds-guard:ID" -j RETURN',
          `-A IMDS-GUARD -d ${dst} -p tcp -m tcp --dport 80 -m comment --comment "imds-guard:ID" -j REDIRECT --to-ports 1`,
        ]);
        assert.deepEqual(shape('IMDS-GUARD-FWD'), [
          '-A IMDS-GUARD-FWD -i eth9 -m comment --comment "imds-guard:ID" -j RETURN',
          `-A IMDS-GUARD-FWD -d ${dst} -p tcp -m tcp --dport 80 -m comment --comment "imds-guard:ID" -j REJECT --reject-with tcp-reset`,
        ]);
      }
      const audit = parseAudit(runCli(ns, host, ['audit', '--backend', backend, '--allow', 'eth9', '--format', 'json', ...host.args]));
      assert.equal(audit.protected, true);
      assert.deepEqual(audit.allow, ['eth9']);
      // Allowing eth9 again is converged; dropping the allow rewrites both chains without it.
      const again = host.restores().length;
      assert.match(runCli(ns, host, ['apply', '--backend', backend, '--allow', 'eth9', ...host.args]).stdout, /already protected; nothing written/);
      assert.equal(host.restores().length, again);
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      assert.equal(saveNatFilter(ns, 'ipv4', backend), PROTECTED_V4);
    });

    test('with a container parent cgroup given, apply adds the filter OUTPUT chain whose rule names the cgroup and its inode; a second apply writes nothing', (t) => {
      const cg = createTestCgroup();
      t.after(() => cg.destroy());
      const { ns, host } = freshHost(t, 'apply');
      const args = ['--backend', backend, '--cgroup-parent', cg.path, ...host.baseArgs];
      const r = runCli(ns, host, ['apply', ...args]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^imds-guard: backend \S+; 6 rule\(s\) hide 2 endpoint\(s\) from every container$/m);
      // Still one restore per table and family: OUTPUT goes into the filter transaction with FORWARD.
      assert.deepEqual(host.restores().map((x) => `${x.tool} ${x.payload.split('\n')[0]}`), [
        `iptables-${backend}-restore *nat`,
        `iptables-${backend}-restore *filter`,
        `ip6tables-${backend}-restore *nat`,
        `ip6tables-${backend}-restore *filter`,
      ]);
      const ino = cg.inode(cg.path);
      for (const [family, dst] of [['ipv4', '169.254.169.254/32'], ['ipv6', 'fd00:ec2::254/128']] as const) {
        const filter = tableRules(ns, family, backend, 'filter');
        assert.ok(filter.includes(OUT_JUMP_LINE), filter.join('\n'));
        assert.deepEqual(
          filter.filter((l) => l.startsWith('-A IMDS-GUARD-OUT ')).map((l) => l.replace(/imds-guard:[0-9a-f]{12}/, 'imds-guard:ID')),
          [`-A IMDS-GUARD-OUT -d ${dst} -p tcp -m tcp --dport 80 -m cgroup --path "${cg.path}" -m comment --comment "imds-guard:ID cgino=${ino}" -j REJECT --reject-with tcp-reset`],
        );
        assert.equal(tableRules(ns, family, backend, 'nat')[0], JUMP_LINE);
      }
      const written = host.restores().length;
      const again = runCli(ns, host, ['apply', ...args]);
      assert.match(again.stdout, /already protected; nothing written/, again.stdout);
      assert.equal(host.restores().length, written);

      // --no-host-network takes the OUTPUT chain and its jump away again, and nothing else.
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      assert.equal(saveNatFilter(ns, 'ipv4', backend), PROTECTED_V4);
      assert.equal(saveNatFilter(ns, 'ipv6', backend), PROTECTED_V6);
    });

    test('every target form is saved back by iptables exactly as rendered, so a second apply writes nothing', (t) => {
      const forms = [
        ['--target', 'redirect:8080'],
        ['--target', 'dnat:1.1.1.1', '--target6', 'dnat:[fd00::1]:8080'],
        ['--target', 'dnat:1.1.1.1:8080', '--target6', 'dnat:fd00::1'],
      ];
      for (const form of forms) {
        const { ns, host } = freshHost(t, 'apply');
        assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...form, ...host.args]).code, 0);
        const written = host.restores().length;
        const again = runCli(ns, host, ['apply', '--backend', backend, ...form, ...host.args]);
        assert.match(again.stdout, /already protected; nothing written/, `${form.join(' ')}: ${again.stdout}`);
        assert.equal(host.restores().length, written, form.join(' '));
      }
    });
  });
}

test('with Docker chains only in the legacy nat table, apply (backend auto) protects the legacy tables and audit reports legacy', (t) => {
  const { ns, host } = freshHost(t, 'apply');
  ns.nat('ipv4', 'legacy', ['-N', 'DOCKER']);
  ns.nat('ipv4', 'legacy', ['-A', 'PREROUTING', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER']);

  const r = runCli(ns, host, ['apply', ...host.args]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^imds-guard: backend legacy;/);
  assert.deepEqual(host.restores().map((x) => `${x.tool} ${x.payload.split('\n')[0]}`), [
    'iptables-legacy-restore *nat',
    'iptables-legacy-restore *filter',
    'ip6tables-legacy-restore *nat',
    'ip6tables-legacy-restore *filter',
  ]);
  assert.equal(saveNatFilter(ns, 'ipv6', 'legacy'), PROTECTED_V6);
  for (const family of ['ipv4', 'ipv6'] as const) {
    assert.equal(saveTable(ns, family, 'nft', 'nat'), FRESH_NAT);
    assert.equal(saveTable(ns, family, 'nft', 'filter'), FRESH_FILTER);
  }

  const audit = runCli(ns, host, ['audit', '--format', 'json', ...host.args]);
  assert.equal(audit.code, 0, audit.stdout);
  const report = parseAudit(audit);
  assert.equal(report.backend, 'legacy');
  assert.equal(report.findings.find((f) => f.id === 'IG-502')?.message, "iptables backend legacy: Docker's nat chains are in the legacy backend");
});

test('with Docker chains only in the nft nat table, apply (backend auto) protects the nft tables and leaves legacy alone', (t) => {
  const { ns, host } = freshHost(t, 'apply');
  ns.nat('ipv4', 'nft', ['-N', 'DOCKER']);
  const r = runCli(ns, host, ['apply', ...host.args]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^imds-guard: backend nft;/);
  assert.deepEqual(host.restores().map((x) => x.tool), ['iptables-nft-restore', 'iptables-nft-restore', 'ip6tables-nft-restore', 'ip6tables-nft-restore']);
  assert.equal(saveTable(ns, 'ipv4', 'nft', 'nat'), PROTECTED_V4.slice(0, PROTECTED_V4.indexOf('*filter')).replace(':IMDS-GUARD - [0:0]', ':DOCKER - [0:0]\n:IMDS-GUARD - [0:0]'));
  assert.equal(saveTable(ns, 'ipv4', 'legacy', 'nat'), FRESH_NAT);
});
