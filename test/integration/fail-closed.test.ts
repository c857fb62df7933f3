import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { FRESH_FILTER, type Host, ensureBuilt, fixture, freshHost, parseAudit, runCli, saveNatFilter, saveTable } from '../helpers/cli.js';
import { FRESH_NAT, type Netns, type RunResult } from '../helpers/netns.js';

before(() => ensureBuilt());

/**
 * A table that could not be read was not checked, so it is not protected: `audit` exits 1
 * with a FAIL IG-501 finding for that family (text and JSON) and never says PROTECTED, and
 * `apply` exits 1 saying the failure needs the operator, never "protected".
 */
function assertNeverProtected(r: RunResult): void {
  assert.doesNotMatch(r.stdout, /^verdict: PROTECTED/m);
  assert.doesNotMatch(r.stdout, /already protected|imds-guard: protected/);
}

function unreadable(report: ReturnType<typeof parseAudit>): string[] {
  return report.findings.filter((f) => f.id === 'IG-501').map((f) => `${f.status} ${f.kind} ${f.family} ${f.backend}`);
}

/** Loads the legacy nat and filter tables in the namespace, so the legacy backend is read at all. */
function loadLegacy(ns: Netns): void {
  for (const family of ['iptables-legacy', 'ip6tables-legacy']) for (const table of ['nat', 'filter']) ns.check(family, ['-t', table, '-S']);
}

describe('a backend whose iptables-save fails (legacy forced, iptables-legacy-save exits 1)', () => {
  const setUp = (t: { after(fn: () => void): void }): { ns: Netns; host: Host; args: string[] } => {
    const { ns, host } = freshHost(t, 'failclosed');
    loadLegacy(ns);
    host.stub('iptables-legacy-save', 'echo "iptables-legacy-save: simulated failure" >&2; exit 1');
    return { ns, host, args: ['--backend', 'legacy', ...host.args] };
  };

  test('audit exits 1 with FAIL IG-501 for ipv4 in text and JSON, and never says PROTECTED', (t) => {
    const { ns, host, args } = setUp(t);
    const json = runCli(ns, host, ['audit', '--format', 'json', ...args]);
    assert.equal(json.code, 1, json.stdout + json.stderr);
    const report = parseAudit(json);
    assert.equal(report.protected, false);
    assert.deepEqual(unreadable(report), ['fail table-unreadable ipv4 legacy']);

    const text = runCli(ns, host, ['audit', ...args]);
    assert.equal(text.code, 1, text.stdout + text.stderr);
    assert.match(text.stdout, /^verdict: NOT PROTECTED/m);
    assert.match(text.stdout, /^\[FAIL\] IG-501 ipv4 the ipv4 tables of the legacy backend could not be read: nothing about ipv4 was checked$/m);
    assertNeverProtected(text);
  });

  test('apply exits 1, protects the family it could read, writes nothing to the one it could not, and says the failure needs the operator', (t) => {
    const { ns, host, args } = setUp(t);
    const r = runCli(ns, host, ['apply', ...args]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^needs the operator: \[table-unreadable\] ipv4 the ipv4 tables of the legacy backend could not be read/m);
    assert.match(r.stdout, /^imds-guard: NOT PROTECTED \(2 transaction\(s\); 1 failure\(s\) no pass can repair\)$/m);
    assertNeverProtected(r);
    assert.deepEqual(host.restores().map((x) => x.tool), ['ip6tables-legacy-restore', 'ip6tables-legacy-restore']);
    assert.equal(saveNatFilter(ns, 'ipv6', 'legacy'), fixture('protected-default.ipv6.save'));
    assert.equal(ns.check('iptables-legacy-save', []).includes('IMDS-GUARD'), false);

    // A second apply still cannot read ipv4: it writes nothing and still does not claim protection.
    const again = runCli(ns, host, ['apply', ...args]);
    assert.equal(again.code, 1);
    assert.match(again.stdout, /^imds-guard: NOT PROTECTED \(0 transaction\(s\); 1 failure\(s\) no pass can repair\)$/m);
    assertNeverProtected(again);
    assert.equal(host.restores().length, 2);
  });
});

/** A PATH that has nsenter (to enter the namespace), node (for the imds-guard command) and nothing of iptables. */
function pathWithoutIptables(host: Host): string {
  const dir = join(host.root, 'no-iptables');
  mkdirSync(dir);
  symlinkSync(process.execPath, join(dir, 'node'));
  for (const name of ['nsenter', 'setpriv']) symlinkSync(execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim(), join(dir, name));
  return dir;
}

// The README's exit table says 2 when "the host could not be observed (iptables missing,
// no permission)"; the code reads an unreadable table as a FAIL finding instead (fail closed,
// issue 11), so both verbs exit 1. These tests pin what the code does.
test('with no iptables at all, audit and apply exit 1 with FAIL IG-501 for both families and write nothing', (t) => {
  const { ns, host } = freshHost(t, 'failclosed');
  const env = { PATH: pathWithoutIptables(host) };
  const audit = runCli(ns, host, ['audit', '--format', 'json', ...host.args], { env });
  assert.equal(audit.code, 1, audit.stdout + audit.stderr);
  const report = parseAudit(audit);
  assert.equal(report.protected, false);
  assert.deepEqual(unreadable(report), ['fail table-unreadable ipv4 nft', 'fail table-unreadable ipv6 nft']);
  assert.match(report.findings.find((f) => f.id === 'IG-501')?.evidence[0] ?? '', /^iptables-nft-save not found: install it/);

  const apply = runCli(ns, host, ['apply', ...host.args], { env });
  assert.equal(apply.code, 1, apply.stdout + apply.stderr);
  assert.match(apply.stdout, /^imds-guard: NOT PROTECTED \(0 transaction\(s\); 2 failure\(s\) no pass can repair\)$/m);
  assertNeverProtected(apply);
  assert.equal(existsSync(host.bootScript), false, 'no boot script for tables nobody read');
  assert.equal(saveTable(ns, 'ipv4', 'nft', 'nat'), FRESH_NAT);
});

for (const backend of ['nft', 'legacy'] as const) {
  test(`an unprivileged user (uid 65534) running audit and apply --backend ${backend} gets exit 1, FAIL IG-501 naming the missing permission, and nothing changes`, (t) => {
    const { ns, host } = freshHost(t, 'failclosed');
    // The legacy tables exist (as on a legacy Docker host), and /proc/net/ip_tables_names is root-only.
    if (backend === 'legacy') loadLegacy(ns);
    const args = ['--backend', backend, ...host.args];
    const audit = runCli(ns, host, ['audit', '--format', 'json', ...args], { uid: 65534 });
    assert.equal(audit.code, 1, audit.stdout + audit.stderr);
    const report = parseAudit(audit);
    assert.deepEqual(unreadable(report), [`fail table-unreadable ipv4 ${backend}`, `fail table-unreadable ipv6 ${backend}`]);
    for (const f of report.findings.filter((x) => x.id === 'IG-501')) assert.match(f.evidence[0] ?? '', /permission denied \(run as root or with CAP_NET_ADMIN\)/);

    const apply = runCli(ns, host, ['apply', ...args], { uid: 65534 });
    assert.equal(apply.code, 1, apply.stdout + apply.stderr);
    assertNeverProtected(apply);
    assert.equal(saveTable(ns, 'ipv4', backend, 'nat'), FRESH_NAT);
    assert.equal(saveTable(ns, 'ipv4', backend, 'filter'), FRESH_FILTER);
    assert.equal(existsSync(host.bootScript), false);
  });
}
