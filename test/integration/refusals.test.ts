import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { type Host, ensureBuilt, freshHost, runCli } from '../helpers/cli.js';
import { FRESH_NAT, type Netns, type RunResult } from '../helpers/netns.js';

before(() => ensureBuilt());

/** Exit 2, exactly `line` on stderr, no stack trace, and nothing touched. */
function assertRefused(ns: Netns, host: Host, r: RunResult, line: string): void {
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.equal(r.stderr, `${line}\n`);
  assert.equal(r.stdout, '');
  assert.deepEqual(host.restores(), []);
  assert.equal(existsSync(host.bootScript), false);
  assert.equal(ns.saveNat('ipv4', 'nft'), FRESH_NAT);
  assert.equal(ns.saveNat('ipv6', 'nft'), FRESH_NAT);
}

describe('a bad configuration changes nothing: exit 2 and one line naming the source, key and value', () => {
  test('an interface with a space given as a flag', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.args, '--interfaces', 'docker0,docker 1']);
    assertRefused(ns, host, r, 'imds-guard: command line: interfaces[1] "docker 1" contains whitespace or a non-printable character');
  });

  test('a shell substitution as an interface in IMDS_GUARD_INTERFACES', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.args], { env: { IMDS_GUARD_INTERFACES: 'br-+,$(reboot)' } });
    assertRefused(ns, host, r, 'imds-guard: environment: interfaces[1] "$(reboot)" contains a character the kernel or a shell script cannot take (/ : quote, backslash, $, !)');
  });

  test('an interface with a slash in a YAML config file', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'config.yaml');
    writeFileSync(file, 'mode: enforce\ninterfaces:\n  - docker0\n  - "br/1"\n');
    const r = runCli(ns, host, ['apply', '--config', file, ...host.args]);
    assertRefused(ns, host, r, `imds-guard: config file ${file}: interfaces[1] "br/1" contains a character the kernel or a shell script cannot take (/ : quote, backslash, $, !)`);
  });

  test('a 16-byte interface name in a JSON config file named by IMDS_GUARD_CONFIG', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'config.json');
    writeFileSync(file, JSON.stringify({ interfaces: ['abcdefghijklmnop'] }));
    const r = runCli(ns, host, ['apply', ...host.args], { env: { IMDS_GUARD_CONFIG: file } });
    assertRefused(ns, host, r, `imds-guard: config file ${file}: interfaces[0] "abcdefghijklmnop" is longer than 15 bytes`);
  });

  test('an unknown key in a config file', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'config.yaml');
    writeFileSync(file, 'interfaces: [docker0]\ninterface: br-+\n');
    const r = runCli(ns, host, ['apply', '--config', file, ...host.args]);
    assertRefused(ns, host, r, `imds-guard: config file ${file}: interface "br-+" is not a known key`);
  });

  test('a config file named with --config that does not exist', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'missing.yaml');
    const r = runCli(ns, host, ['apply', '--config', file, ...host.args]);
    assertRefused(ns, host, r, `imds-guard: config file ${file}: cannot read it (ENOENT)`);
  });

  test('a config file that is not valid YAML', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'config.yaml');
    writeFileSync(file, 'interfaces: [docker0\nmode: report\n');
    const r = runCli(ns, host, ['apply', '--config', file, ...host.args]);
    assertRefused(ns, host, r, `imds-guard: config file ${file}: not valid YAML or JSON: Flow sequence in block collection must be sufficiently indented and end with a ]`);
  });

  test('a dnat target to an IPv4 address while IPv6 endpoints are configured, without target6', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.args, '--target', 'dnat:1.1.1.1']);
    assertRefused(ns, host, r, 'imds-guard: command line: target "dnat:1.1.1.1" is a dnat to an IPv4 address, which cannot serve the IPv6 endpoints; set target6 (e.g. redirect)');
  });
});

for (const backend of ['nft', 'legacy'] as const) {
  test(`an unprivileged user (uid 65534) running apply --backend ${backend} gets exit 2 and one line saying permission is missing, with no stack trace`, (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', '--backend', backend, ...host.args], { uid: 65534 });
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.equal(r.stdout, '');
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^imds-guard: ip6?tables-(nft|legacy)-save: permission denied \(run as root or with CAP_NET_ADMIN\): .*Permission denied \(you must be root\)$/);
    assert.equal(ns.saveNat('ipv4', backend), FRESH_NAT);
    assert.equal(existsSync(host.bootScript), false);
  });
}
