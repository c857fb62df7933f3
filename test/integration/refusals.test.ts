import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { FRESH_FILTER, type Host, ensureBuilt, freshHost, runCli, saveTable } from '../helpers/cli.js';
import { FRESH_NAT, type Netns, type RunResult } from '../helpers/netns.js';

before(() => ensureBuilt());

/** Exit 2, exactly `lines` on stderr, no stack trace, and nothing touched in either backend. */
function assertRefused(ns: Netns, host: Host, r: RunResult, ...lines: string[]): void {
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.equal(r.stderr, lines.map((l) => `${l}\n`).join(''));
  assert.equal(r.stdout, '');
  assert.deepEqual(host.restores(), []);
  assert.equal(existsSync(host.bootScript), false);
  for (const family of ['ipv4', 'ipv6'] as const) {
    assert.equal(saveTable(ns, family, 'nft', 'nat'), FRESH_NAT);
    assert.equal(saveTable(ns, family, 'nft', 'filter'), FRESH_FILTER);
  }
}

// commander's own refusals (an unknown flag, a value outside a flag's choices) print its
// line and a hint; everything the config schema refuses is one line naming source, key, value.
const HINT = '(run with --help for usage)';

describe('a bad configuration changes nothing: exit 2 and one line naming the source, key and value', () => {
  test("--allow 'br-+': an allowed interface is a literal name, never a wildcard", (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.args, '--allow', 'br-+']);
    assertRefused(ns, host, r, `imds-guard: command line: allow[0] "br-+" is a wildcard ('+'): an allowed interface must be named exactly`);
  });

  test('--interfaces is no longer an option', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.args, '--interfaces', 'x']);
    assertRefused(ns, host, r, "imds-guard: unknown option '--interfaces'", HINT);
  });

  test('a config file with the interfaces key is refused with what replaced it (allow)', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'config.yaml');
    writeFileSync(file, 'interfaces:\n  - docker0\n  - br-+\n');
    const r = runCli(ns, host, ['apply', '--config', file, ...host.args]);
    assertRefused(ns, host, r, `imds-guard: config file ${file}: interfaces is no longer a setting: every interface is covered now, whatever its name; list the interfaces that must keep access under allow`);
  });

  test('a config file with the ipset key is refused: no set is needed any more', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'config.yaml');
    writeFileSync(file, 'ipset: true\n');
    const r = runCli(ns, host, ['apply', '--config', file, ...host.args]);
    assertRefused(ns, host, r, `imds-guard: config file ${file}: ipset is no longer a setting: custom-named bridges need no set any more: every interface is covered`);
  });

  test('--cloud mars is not a cloud imds-guard has a preset for', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.args, '--cloud', 'mars']);
    assertRefused(ns, host, r, "imds-guard: option '--cloud <cloud>' argument 'mars' is invalid. Allowed choices are auto, aws, gcp, azure, oci, openstack, alibaba, tencent, digitalocean.", HINT);
  });

  test('cloud: mars in a config file', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'config.yaml');
    writeFileSync(file, 'cloud: mars\n');
    const r = runCli(ns, host, ['apply', '--config', file, ...host.args]);
    assertRefused(ns, host, r, `imds-guard: config file ${file}: cloud "mars" Invalid option: expected one of "auto"|"aws"|"gcp"|"azure"|"oci"|"openstack"|"alibaba"|"tencent"|"digitalocean"`);
  });

  test('an allowed interface with a space given as a flag', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.args, '--allow', 'eth9,docker 1']);
    assertRefused(ns, host, r, 'imds-guard: command line: allow[1] "docker 1" contains whitespace or a non-printable character');
  });

  test('a shell substitution as an allowed interface in IMDS_GUARD_ALLOW', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.args], { env: { IMDS_GUARD_ALLOW: 'eth9,$(reboot)' } });
    assertRefused(ns, host, r, 'imds-guard: environment: allow[1] "$(reboot)" contains a character the kernel or a shell script cannot take (/ : quote, backslash, $, !)');
  });

  test('an allowed interface with a slash in a YAML config file', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'config.yaml');
    writeFileSync(file, 'mode: enforce\nallow:\n  - eth9\n  - "br/1"\n');
    const r = runCli(ns, host, ['apply', '--config', file, ...host.args]);
    assertRefused(ns, host, r, `imds-guard: config file ${file}: allow[1] "br/1" contains a character the kernel or a shell script cannot take (/ : quote, backslash, $, !)`);
  });

  test('a 16-byte allowed interface in a JSON config file named by IMDS_GUARD_CONFIG', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'config.json');
    writeFileSync(file, JSON.stringify({ allow: ['abcdefghijklmnop'] }));
    const r = runCli(ns, host, ['apply', ...host.args], { env: { IMDS_GUARD_CONFIG: file } });
    assertRefused(ns, host, r, `imds-guard: config file ${file}: allow[0] "abcdefghijklmnop" is longer than 15 bytes`);
  });

  test('an endpoint port out of range', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.args, '--endpoints', '169.254.169.254:99999']);
    assertRefused(ns, host, r, 'imds-guard: command line: endpoints[0] "169.254.169.254:99999" has a port that is not 1-65535: "99999"');
  });

  test('a cgroup parent that is not an absolute path', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.baseArgs, '--cgroup-parent', 'docker']);
    assertRefused(ns, host, r, 'imds-guard: command line: cgroupParent "docker" must be auto or an absolute cgroup v2 path');
  });

  test('an unknown key in a config file', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const file = join(host.root, 'config.yaml');
    writeFileSync(file, 'allow: [eth9]\nalow: eth8\n');
    const r = runCli(ns, host, ['apply', '--config', file, ...host.args]);
    assertRefused(ns, host, r, `imds-guard: config file ${file}: alow "eth8" is not a known key`);
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
    writeFileSync(file, 'allow: [eth9\nmode: report\n');
    const r = runCli(ns, host, ['apply', '--config', file, ...host.args]);
    assertRefused(ns, host, r, `imds-guard: config file ${file}: not valid YAML or JSON: Flow sequence in block collection must be sufficiently indented and end with a ]`);
  });

  test('a dnat target to an IPv4 address while IPv6 endpoints are configured, without target6', (t) => {
    const { ns, host } = freshHost(t, 'refuse');
    const r = runCli(ns, host, ['apply', ...host.args, '--target', 'dnat:1.1.1.1']);
    assertRefused(ns, host, r, 'imds-guard: command line: target "dnat:1.1.1.1" is a dnat to an IPv4 address, which cannot serve the IPv6 endpoints; set target6 (e.g. redirect)');
  });
});
