import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { ensureBuilt, fixture, freshHost, runCli } from '../helpers/cli.js';
import type { Backend } from '../helpers/netns.js';

before(() => ensureBuilt());

/** The nat section of a real Docker 20.10 save (default bridge, user bridge, swarm ingress). */
const DOCKER_NAT_V4 = (() => {
  const text = fixture('docker-20.10-swarm.nft.save');
  const start = text.indexOf('*nat\n');
  return `${text.slice(start, text.indexOf('COMMIT\n', start))}COMMIT\n`;
})();

const DOCKER_NAT_V6 = `*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s fd00:dead:beef::/48 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
`;

const REMOVAL = `*nat
-D PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
:IMDS-GUARD - [0:0]
-X IMDS-GUARD
COMMIT
`;

for (const backend of ['nft', 'legacy'] as const satisfies readonly Backend[]) {
  describe(`remove with --backend ${backend}`, () => {
    test('remove after apply restores a Docker nat table byte for byte in both families and deletes the boot script', (t) => {
      const { ns, host } = freshHost(t, 'remove');
      ns.restore('ipv4', backend, DOCKER_NAT_V4);
      ns.restore('ipv6', backend, DOCKER_NAT_V6);
      const v4 = ns.saveNat('ipv4', backend);
      const v6 = ns.saveNat('ipv6', backend);

      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      assert.notEqual(ns.saveNat('ipv4', backend), v4);
      assert.ok(existsSync(host.bootScript));
      const written = host.restores().length;

      const r = runCli(ns, host, ['remove', ...host.args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'imds-guard: removed (2 nat transaction(s), boot script deleted)\n');
      assert.deepEqual(host.restores().slice(written), [
        { tool: `iptables-${backend}-restore`, payload: REMOVAL },
        { tool: `ip6tables-${backend}-restore`, payload: REMOVAL },
      ]);
      assert.equal(ns.saveNat('ipv4', backend), v4);
      assert.equal(ns.saveNat('ipv6', backend), v6);
      assert.equal(existsSync(host.bootScript), false);
    });

    test('remove also deletes jumps to our chain that someone put in other chains, then the chain', (t) => {
      const { ns, host } = freshHost(t, 'remove');
      ns.restore('ipv4', backend, DOCKER_NAT_V4);
      const v4 = ns.saveNat('ipv4', backend);
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      ns.nat('ipv4', backend, ['-A', 'OUTPUT', '-d', '169.254.169.254/32', '-j', 'IMDS-GUARD']);
      ns.nat('ipv4', backend, ['-A', 'PREROUTING', '-i', 'docker0', '-j', 'IMDS-GUARD']);

      const r = runCli(ns, host, ['remove', ...host.args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(ns.saveNat('ipv4', backend), v4);
    });
  });
}

test('remove on a host without imds-guard writes nothing and succeeds', (t) => {
  const { ns, host } = freshHost(t, 'remove');
  ns.restore('ipv4', 'nft', DOCKER_NAT_V4);
  const v4 = ns.saveNat('ipv4', 'nft');
  const r = runCli(ns, host, ['remove', ...host.args]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'imds-guard: removed (0 nat transaction(s))\n');
  assert.deepEqual(host.restores(), []);
  assert.equal(ns.saveNat('ipv4', 'nft'), v4);
});

test('remove leaves a file at the boot script path that imds-guard did not write', (t) => {
  const { ns, host } = freshHost(t, 'remove');
  writeFileSync(host.bootScript, '#!/bin/sh\necho hand-made\n', { mode: 0o755 });
  const r = runCli(ns, host, ['remove', ...host.args]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'imds-guard: removed (0 nat transaction(s))\n');
  assert.ok(existsSync(host.bootScript));
});
