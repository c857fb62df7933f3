import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { ensureBuilt, fixture, freshHost, ipt, runCli, saveNatFilter } from '../helpers/cli.js';
import { createTestCgroup } from '../helpers/cgroup.js';
import type { Backend, Netns } from '../helpers/netns.js';

before(() => ensureBuilt());

/** A real Docker 20.10 save (default bridge, user bridge, swarm ingress): filter and nat. */
const DOCKER_V4 = fixture('docker-20.10-swarm.nft.save');

/** The same shape for IPv6 (Docker with ip6tables: true). */
const DOCKER_V6 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s fd00:dead:beef::/48 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
`;

const JUMP = '-m comment --comment "imds-guard: metadata endpoint protection"';
const NAT_REMOVAL = `*nat
-D PREROUTING ${JUMP} -j IMDS-GUARD
:IMDS-GUARD - [0:0]
-X IMDS-GUARD
COMMIT
`;
const FILTER_REMOVAL = `*filter
-D FORWARD ${JUMP} -j IMDS-GUARD-FWD
-D DOCKER-USER ${JUMP} -j IMDS-GUARD-FWD
-D OUTPUT ${JUMP} -j IMDS-GUARD-OUT
:IMDS-GUARD-FWD - [0:0]
:IMDS-GUARD-OUT - [0:0]
-X IMDS-GUARD-FWD
-X IMDS-GUARD-OUT
COMMIT
`;

/** Docker's tables in both families of one backend, and what they read back as. */
function seedDocker(ns: Netns, backend: Backend): { v4: string; v6: string } {
  ns.restore('ipv4', backend, DOCKER_V4);
  ns.restore('ipv6', backend, DOCKER_V6);
  return { v4: saveNatFilter(ns, 'ipv4', backend), v6: saveNatFilter(ns, 'ipv6', backend) };
}

for (const backend of ['nft', 'legacy'] as const satisfies readonly Backend[]) {
  describe(`remove with --backend ${backend}`, () => {
    test("remove after apply (nat chain, FORWARD backstop and OUTPUT chain) leaves Docker's nat and filter tables byte for byte as they were in both families and deletes the boot script", (t) => {
      const cg = createTestCgroup();
      t.after(() => cg.destroy());
      const { ns, host } = freshHost(t, 'remove');
      const docker = seedDocker(ns, backend);

      assert.equal(runCli(ns, host, ['apply', '--backend', backend, '--cgroup-parent', cg.path, ...host.baseArgs]).code, 0);
      for (const family of ['ipv4', 'ipv6'] as const) {
        const tables = saveNatFilter(ns, family, backend);
        for (const chain of ['IMDS-GUARD', 'IMDS-GUARD-FWD', 'IMDS-GUARD-OUT']) assert.ok(tables.includes(`:${chain} - [0:0]`), `${family} ${chain}`);
        assert.ok(tables.includes(`-A DOCKER-USER ${JUMP} -j IMDS-GUARD-FWD\n-A DOCKER-USER -j RETURN\n`), `${family}: our backstop jump at the top of Docker's DOCKER-USER`);
      }
      assert.ok(existsSync(host.bootScript));
      const written = host.restores().length;

      const r = runCli(ns, host, ['remove', ...host.baseArgs]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'imds-guard: removed (4 transaction(s), boot script deleted)\n');
      // One per table and family; their order is the order iptables-save prints the tables in.
      const removal = (x: { tool: string; payload: string }) => `${x.tool}\n${x.payload}`;
      assert.deepEqual(host.restores().slice(written).map(removal).sort(), [
        { tool: `iptables-${backend}-restore`, payload: NAT_REMOVAL },
        { tool: `iptables-${backend}-restore`, payload: FILTER_REMOVAL },
        { tool: `ip6tables-${backend}-restore`, payload: NAT_REMOVAL },
        { tool: `ip6tables-${backend}-restore`, payload: FILTER_REMOVAL },
      ].map(removal).sort());
      assert.equal(saveNatFilter(ns, 'ipv4', backend), docker.v4);
      assert.equal(saveNatFilter(ns, 'ipv6', backend), docker.v6);
      assert.equal(existsSync(host.bootScript), false);
    });

    test('remove also deletes jumps to our chains that someone put in other chains, then the chains', (t) => {
      const { ns, host } = freshHost(t, 'remove');
      const docker = seedDocker(ns, backend);
      assert.equal(runCli(ns, host, ['apply', '--backend', backend, ...host.args]).code, 0);
      ipt(ns, 'ipv4', backend, 'nat', ['-A', 'OUTPUT', '-d', '169.254.169.254/32', '-j', 'IMDS-GUARD']);
      ipt(ns, 'ipv4', backend, 'nat', ['-A', 'DOCKER', '-i', 'docker0', '-j', 'IMDS-GUARD']);
      ipt(ns, 'ipv4', backend, 'filter', ['-A', 'DOCKER-USER', '-j', 'IMDS-GUARD-FWD']);

      const r = runCli(ns, host, ['remove', ...host.args]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(saveNatFilter(ns, 'ipv4', backend), docker.v4);
      assert.equal(saveNatFilter(ns, 'ipv6', backend), docker.v6);
    });
  });
}

test('remove deletes what imds-guard left in both backends, every family and table, and nothing else of either', (t) => {
  const { ns, host } = freshHost(t, 'remove');
  const nft = seedDocker(ns, 'nft');
  ns.restore('ipv4', 'legacy', '*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n');
  const legacy = { v4: saveNatFilter(ns, 'ipv4', 'legacy'), v6: saveNatFilter(ns, 'ipv6', 'legacy') };
  assert.equal(runCli(ns, host, ['apply', '--backend', 'nft', ...host.args]).code, 0);
  // As a host that moved from legacy to nft without a pass in between would hold them.
  for (const family of ['ipv4', 'ipv6'] as const) ns.restore(family, 'legacy', fixture(`protected-default.${family}.save`));

  const written = host.restores().length;
  const r = runCli(ns, host, ['remove', ...host.args]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'imds-guard: removed (8 transaction(s), boot script deleted)\n');
  assert.deepEqual(host.restores().slice(written).map((x) => `${x.tool} ${x.payload.split('\n')[0]}`).sort(), [
    'ip6tables-legacy-restore *filter',
    'ip6tables-legacy-restore *nat',
    'ip6tables-nft-restore *filter',
    'ip6tables-nft-restore *nat',
    'iptables-legacy-restore *filter',
    'iptables-legacy-restore *nat',
    'iptables-nft-restore *filter',
    'iptables-nft-restore *nat',
  ]);
  assert.equal(saveNatFilter(ns, 'ipv4', 'nft'), nft.v4);
  assert.equal(saveNatFilter(ns, 'ipv6', 'nft'), nft.v6);
  assert.equal(saveNatFilter(ns, 'ipv4', 'legacy'), legacy.v4);
  assert.equal(saveNatFilter(ns, 'ipv6', 'legacy'), legacy.v6);
});

test('remove on a host without imds-guard writes nothing and succeeds', (t) => {
  const { ns, host } = freshHost(t, 'remove');
  const docker = seedDocker(ns, 'nft');
  const r = runCli(ns, host, ['remove', ...host.args]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'imds-guard: removed (0 transaction(s))\n');
  assert.deepEqual(host.restores(), []);
  assert.equal(saveNatFilter(ns, 'ipv4', 'nft'), docker.v4);
  assert.equal(saveNatFilter(ns, 'ipv6', 'nft'), docker.v6);
});

test('remove leaves a file at the boot script path that imds-guard did not write', (t) => {
  const { ns, host } = freshHost(t, 'remove');
  writeFileSync(host.bootScript, '#!/bin/sh\necho hand-made\n', { mode: 0o755 });
  const r = runCli(ns, host, ['remove', ...host.args]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'imds-guard: removed (0 transaction(s))\n');
  assert.ok(existsSync(host.bootScript));
});
