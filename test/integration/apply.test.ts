import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { JUMP_LINE, ensureBuilt, fixture, freshHost, parseAudit, runCli } from '../helpers/cli.js';
import { type Backend, FRESH_NAT } from '../helpers/netns.js';

before(() => ensureBuilt());

// What iptables-save prints (minus its # lines) for a protected fresh namespace, either backend.
const PROTECTED_V4 = fixture('protected-default.ipv4.save');
const PROTECTED_V6 = fixture('protected-default.ipv6.save');

// The one transaction per family a fresh host gets: the chain declared and written whole, the jump on top.
const FIRST_PAYLOAD_V4 = `*nat
:IMDS-GUARD - [0:0]
-A IMDS-GUARD -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:1189f431dc7c -j REDIRECT --to-ports 1
-A IMDS-GUARD -d 169.254.169.254/32 -i docker_gwbridge -p tcp -m tcp --dport 80 -m comment --comment imds-guard:abec39a8c6fe -j REDIRECT --to-ports 1
-A IMDS-GUARD -d 169.254.169.254/32 -i br-+ -p tcp -m tcp --dport 80 -m comment --comment imds-guard:ba669814d24f -j REDIRECT --to-ports 1
-I PREROUTING 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
COMMIT
`;

const FIRST_PAYLOAD_V6 = `*nat
:IMDS-GUARD - [0:0]
-A IMDS-GUARD -d fd00:ec2::254/128 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:ad75a5f5a288 -j REDIRECT --to-ports 1
-A IMDS-GUARD -d fd00:ec2::254/128 -i docker_gwbridge -p tcp -m tcp --dport 80 -m comment --comment imds-guard:4cf25008eba5 -j REDIRECT --to-ports 1
-A IMDS-GUARD -d fd00:ec2::254/128 -i br-+ -p tcp -m tcp --dport 80 -m comment --comment imds-guard:56f9c9b18cf9 -j REDIRECT --to-ports 1
-I PREROUTING 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
COMMIT
`;

for (const backend of ['nft', 'legacy'] as const satisfies readonly Backend[]) {
  describe(`apply with --backend ${backend}`, () => {
    test('apply on a fresh namespace installs chain, jump and one rule per interface and endpoint in both families, in one restore each, and writes the boot script', (t) => {
      const { ns, host } = freshHost(t, 'apply');
      const r = runCli(ns, host, ['apply', '--backend', backend, ...host.args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.match(r.stdout, new RegExp(`^imds-guard: backend ${backend}; 6 interface/endpoint rule\\(s\\) for docker0 docker_gwbridge br-\\+$`, 'm'));
      assert.match(r.stdout, /^imds-guard: protected \(2 nat transaction\(s\)\)$/m);

      assert.equal(ns.saveNat('ipv4', backend), PROTECTED_V4);
      assert.equal(ns.saveNat('ipv6', backend), PROTECTED_V6);
      assert.deepEqual(host.restores(), [
        { tool: `iptables-${backend}-restore`, payload: FIRST_PAYLOAD_V4 },
        { tool: `ip6tables-${backend}-restore`, payload: FIRST_PAYLOAD_V6 },
      ]);
      assert.ok(existsSync(host.bootScript));
      assert.equal(statSync(host.bootScript).mode & 0o777, 0o755);
    });

    test('a second apply on a converged host runs no restore and leaves the nat tables byte for byte as they were', (t) => {
      const { ns, host } = freshHost(t, 'apply');
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      const v4 = ns.saveNat('ipv4', backend);
      const v6 = ns.saveNat('ipv6', backend);
      const before = host.restores().length;

      const r = runCli(ns, host, ['apply', '--backend', backend, ...host.args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `imds-guard: backend ${backend}; 6 interface/endpoint rule(s) for docker0 docker_gwbridge br-+\nimds-guard: already protected; nothing written\n`);
      assert.equal(host.restores().length, before);
      assert.equal(ns.saveNat('ipv4', backend), v4);
      assert.equal(ns.saveNat('ipv6', backend), v6);
    });

    test('audit after apply reports the host protected and exits 0', (t) => {
      const { ns, host } = freshHost(t, 'apply');
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      const r = runCli(ns, host, ['audit', '--backend', backend, '--format', 'json', ...host.args]);
      assert.equal(r.code, 0, r.stdout);
      const report = parseAudit(r);
      assert.equal(report.protected, true);
      assert.equal(report.backend, backend);
      assert.deepEqual(report.findings.filter((f) => f.status === 'fail'), []);
      const protectedRules = report.findings.filter((f) => f.id === 'IG-101' && f.kind === 'protected').map((f) => `${f.family} ${(f as { interface?: string }).interface}`);
      assert.deepEqual(protectedRules, ['ipv4 docker0', 'ipv4 docker_gwbridge', 'ipv4 br-+', 'ipv6 docker0', 'ipv6 docker_gwbridge', 'ipv6 br-+']);
    });

    test('--mode report on an unprotected host exits 1, names what is missing and changes nothing', (t) => {
      const { ns, host } = freshHost(t, 'apply');
      const r = runCli(ns, host, ['apply', '--mode', 'report', '--backend', backend, ...host.args]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stdout, /^would repair: \[jump-missing\] ipv4 PREROUTING has no jump to IMDS-GUARD$/m);
      assert.match(r.stdout, /^would repair: \[rule-missing\] ipv6 br-\+ -> \[fd00:ec2::254\]:80 is not protected: its rule is missing$/m);
      assert.match(r.stdout, /^imds-guard: NOT PROTECTED \(report mode: nothing changed\)$/m);
      assert.deepEqual(host.restores(), []);
      assert.equal(ns.saveNat('ipv4', backend), FRESH_NAT);
      assert.equal(ns.saveNat('ipv6', backend), FRESH_NAT);
      assert.equal(existsSync(host.bootScript), false);
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

test('apply installs ip6tables rules for fd00:ec2::254 that redirect IPv6 metadata traffic from every interface', (t) => {
  const { ns, host } = freshHost(t, 'apply');
  assert.equal(runCli(ns, host, ['apply', '--backend', 'nft', ...host.args]).code, 0);
  assert.deepEqual(ns.natRules('ipv6', 'nft').filter((l) => l.startsWith('-A IMDS-GUARD')).map((l) => / -d (\S+) -i (\S+) .* -j (.*)$/.exec(l)?.slice(1).join(' ')), [
    'fd00:ec2::254/128 docker0 REDIRECT --to-ports 1',
    'fd00:ec2::254/128 docker_gwbridge REDIRECT --to-ports 1',
    'fd00:ec2::254/128 br-+ REDIRECT --to-ports 1',
  ]);
});

test('with Docker chains only in the legacy nat table, apply (backend auto) protects the legacy table and audit reports legacy', (t) => {
  const { ns, host } = freshHost(t, 'apply');
  ns.nat('ipv4', 'legacy', ['-N', 'DOCKER']);
  ns.nat('ipv4', 'legacy', ['-A', 'PREROUTING', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER']);

  const r = runCli(ns, host, ['apply', ...host.args]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^imds-guard: backend legacy;/);
  assert.deepEqual(host.restores().map((x) => x.tool), ['iptables-legacy-restore', 'ip6tables-legacy-restore']);
  assert.ok(ns.natRules('ipv4', 'legacy').includes(JUMP_LINE));
  assert.ok(ns.natRules('ipv6', 'legacy').includes(JUMP_LINE));
  assert.deepEqual(ns.natRules('ipv4', 'nft'), []);
  assert.deepEqual(ns.natRules('ipv6', 'nft'), []);

  const audit = runCli(ns, host, ['audit', '--format', 'json', ...host.args]);
  assert.equal(audit.code, 0, audit.stdout);
  const report = parseAudit(audit);
  assert.equal(report.backend, 'legacy');
  const choice = report.findings.find((f) => f.id === 'IG-502');
  assert.equal((choice as { message?: string } | undefined)?.message, "iptables backend legacy: Docker's nat chains are in the legacy backend");
});

test('with Docker chains only in the nft nat table, apply (backend auto) protects the nft table and leaves legacy alone', (t) => {
  const { ns, host } = freshHost(t, 'apply');
  ns.nat('ipv4', 'nft', ['-N', 'DOCKER']);
  const r = runCli(ns, host, ['apply', ...host.args]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^imds-guard: backend nft;/);
  assert.deepEqual(host.restores().map((x) => x.tool), ['iptables-nft-restore', 'ip6tables-nft-restore']);
  assert.ok(ns.natRules('ipv4', 'nft').includes(JUMP_LINE));
});

test('switching from nft to legacy moves the rules: apply removes ours from the backend Docker does not use', (t) => {
  const { ns, host } = freshHost(t, 'apply');
  assert.equal(runCli(ns, host, ['apply', '--backend', 'nft', ...host.args]).code, 0);
  const audit = runCli(ns, host, ['audit', '--backend', 'legacy', '--format', 'json', ...host.args]);
  assert.equal(audit.code, 1);
  const leftovers = parseAudit(audit).findings.filter((f) => f.kind === 'other-backend').map((f) => `${f.family} ${f.backend}`);
  assert.deepEqual(leftovers, ['ipv4 nft', 'ipv6 nft']);

  assert.equal(runCli(ns, host, ['apply', '--backend', 'legacy', ...host.args]).code, 0);
  assert.equal(ns.saveNat('ipv4', 'nft'), FRESH_NAT);
  assert.equal(ns.saveNat('ipv6', 'nft'), FRESH_NAT);
  assert.equal(ns.saveNat('ipv4', 'legacy'), PROTECTED_V4);
  assert.equal(ns.saveNat('ipv6', 'legacy'), PROTECTED_V6);
});
