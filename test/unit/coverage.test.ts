import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { networkFindings } from '../../src/core/coverage.js';
import type { DockerNetwork } from '../../src/core/docker-facts.js';
import { isDrift, isFailure, needsOperator } from '../../src/core/findings.js';

const net = (over: Partial<DockerNetwork> & Pick<DockerNetwork, 'name' | 'driver'>): DockerNetwork => ({ id: over.name, bridge: null, parent: null, internal: false, containers: [], ...over });

const BRIDGE = net({ name: 'bridge', driver: 'bridge', bridge: 'docker0', containers: ['web', 'db'] });
const ODD = net({ name: 'odd', driver: 'bridge', bridge: 'bang!x', containers: ['c1'] });
const OVERLAY = net({ name: 'ingress', driver: 'overlay', containers: ['svc.1'] });
const INTERNAL = net({ name: 'backend', driver: 'bridge', bridge: 'br-0123456789ab', internal: true, containers: ['db'] });
const NONE = net({ name: 'none', driver: 'null', containers: ['sealed'] });
const HOST = net({ name: 'host', driver: 'host', containers: ['node-exporter'] });
const MACVLAN = net({ name: 'lan', driver: 'macvlan', parent: 'eth0', containers: ['printer', 'nas'] });
const IPVLAN = net({ name: 'l2', driver: 'ipvlan', parent: 'eth1.20', containers: [] });
const WEIRD = net({ name: 'plugin', driver: 'weave', containers: ['x'] });

describe('networkFindings: every Docker network is listed with how it is covered', () => {
  const cases: readonly [string, DockerNetwork, readonly string[], string, string][] = [
    ['a bridge is forwarded through PREROUTING', BRIDGE, [], 'forwarded', 'info IG-601 network-covered'],
    ['a bridge with an odd name is forwarded like any other', ODD, [], 'forwarded', 'info IG-601 network-covered'],
    ['an overlay is forwarded through docker_gwbridge', OVERLAY, [], 'forwarded', 'info IG-601 network-covered'],
    ['an internal bridge is harmless', INTERNAL, [], 'harmless', 'info IG-601 network-harmless'],
    ['--network none is harmless', NONE, [], 'harmless', 'info IG-601 network-harmless'],
    ['the host network is left to the OUTPUT cgroup rules', HOST, [], 'host', 'info IG-601 network-covered'],
    ['a bridge whose interface is allowed is exposed', BRIDGE, ['docker0'], 'allowed', 'fail IG-602 allowed-docker-bridge'],
    ['an overlay when docker_gwbridge is allowed is exposed', OVERLAY, ['docker_gwbridge'], 'allowed', 'fail IG-602 allowed-docker-bridge'],
    ['a bridge when another interface is allowed stays forwarded', BRIDGE, ['vmbr0'], 'forwarded', 'info IG-601 network-covered'],
    ['macvlan is not coverable (warn by default)', MACVLAN, [], 'not-coverable', 'warn IG-603 network-not-coverable'],
    ['ipvlan is not coverable (warn by default)', IPVLAN, [], 'not-coverable', 'warn IG-603 network-not-coverable'],
    ['a driver imds-guard does not know is not coverable', WEIRD, [], 'not-coverable', 'warn IG-603 network-not-coverable'],
  ];
  for (const [what, n, allow, coverage, finding] of cases) {
    test(what, () => {
      const { views, findings } = networkFindings([n], allow, 'warn');
      assert.deepEqual(views.map((v) => v.coverage), [coverage]);
      assert.deepEqual(findings.map((f) => `${f.status} ${f.id} ${f.kind}`), [finding]);
      assert.equal(findings[0]!.network, n.name);
    });
  }

  test('an overlay says it goes through docker_gwbridge', () => {
    assert.equal(networkFindings([OVERLAY], [], 'warn').views[0]!.why, "forwarded from docker_gwbridge through the host's PREROUTING");
  });

  test('an allowed Docker bridge is a FAIL naming the containers it exposes, with a remediation, for the operator', () => {
    const f = networkFindings([BRIDGE], ['docker0'], 'warn').findings[0]!;
    assert.equal(f.message, 'network bridge is EXPOSED: its bridge docker0 is an allowed interface, so its containers can read the metadata');
    assert.deepEqual(f.evidence, ['driver bridge, interface docker0; containers: web, db']);
    assert.equal(f.interface, 'docker0');
    assert.equal(f.remediation, 'remove docker0 from allow, or move the containers to another network');
    assert.equal(isFailure(f), true);
    assert.equal(isDrift(f), false, 'nobody undid our work: exposure, not drift');
    assert.equal(needsOperator(f), true);
  });

  test('macvlan and ipvlan name their parent and containers in the evidence, and FAIL when notCoverable is fail', () => {
    const { findings } = networkFindings([MACVLAN, IPVLAN], [], 'fail');
    assert.deepEqual(
      findings.map((f) => [f.network, f.status, f.evidence]),
      [
        ['l2', 'fail', ['driver ipvlan, parent eth1.20; no containers']],
        ['lan', 'fail', ['driver macvlan, parent eth0; containers: printer, nas']],
      ],
    );
    const lan = findings[1]!;
    assert.equal(lan.message, "network lan is exposed and cannot be covered from the host: macvlan traffic leaves on eth0 without passing the host's PREROUTING");
    assert.match(lan.remediation ?? '', /use a bridge network/);
    assert.match(lan.remediation ?? '', /--http-put-response-hop-limit 1/);
    assert.equal(needsOperator(lan), true);
  });

  test('networks are listed sorted by name, each once', () => {
    const { views } = networkFindings([MACVLAN, BRIDGE, NONE, OVERLAY], [], 'warn');
    assert.deepEqual(views.map((v) => v.name), ['bridge', 'ingress', 'lan', 'none']);
    assert.deepEqual(views.find((v) => v.name === 'lan'), { name: 'lan', driver: 'macvlan', coverage: 'not-coverable', interface: null, parent: 'eth0', containers: ['printer', 'nas'], why: "macvlan traffic leaves on eth0 without passing the host's PREROUTING" });
  });
});
