import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type BackendChoice, chooseBackend } from '../../src/core/backend-choice.js';
import type { Backend } from '../../src/core/family.js';
import { type SavedTable, parseTable } from '../../src/core/saved-table.js';

const BUILT_INS = [':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]'];
const table = (...lines: string[]): SavedTable => parseTable(['*nat', ...BUILT_INS, ...lines, 'COMMIT', ''].join('\n'), 'nat');

const EMPTY = table();
const DOCKER = table(':DOCKER - [0:0]', '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER', '-A DOCKER -i docker0 -j RETURN');
const SWARM_ONLY = table(':DOCKER-INGRESS - [0:0]', '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS');
const DOCKER_BIG = table(':DOCKER - [0:0]', '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER', '-A DOCKER -i docker0 -j RETURN', '-A DOCKER -i br-1 -j RETURN', '-A DOCKER -i br-2 -j RETURN');
const FOREIGN = table('-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE');

const cases: readonly [string, Backend | null, SavedTable | null, SavedTable | null, BackendChoice][] = [
  ["Docker's chains only in nft", null, DOCKER, EMPTY, { backend: 'nft', reason: "Docker's nat chains are in the nft backend" }],
  ["Docker's chains only in legacy", null, EMPTY, DOCKER, { backend: 'legacy', reason: "Docker's nat chains are in the legacy backend" }],
  ["only Swarm's DOCKER-INGRESS, in legacy", null, EMPTY, SWARM_ONLY, { backend: 'legacy', reason: "Docker's nat chains are in the legacy backend" }],
  ['Docker in both, legacy holding more rules', null, DOCKER, DOCKER_BIG, { backend: 'legacy', reason: "Docker's nat chains are in both backends; legacy holds more rules" }],
  ['Docker in both, nft holding more rules', null, DOCKER_BIG, DOCKER, { backend: 'nft', reason: "Docker's nat chains are in both backends; nft holds more rules" }],
  ['Docker in both with as many rules each (nft wins the tie)', null, DOCKER, DOCKER, { backend: 'nft', reason: "Docker's nat chains are in both backends; nft holds more rules" }],
  ['no Docker chains, the legacy table holds rules', null, EMPTY, FOREIGN, { backend: 'legacy', reason: 'no Docker chains found; the legacy nat table holds rules' }],
  ['no Docker chains and both tables empty', null, EMPTY, EMPTY, { backend: 'nft', reason: 'no Docker chains found (Docker not started, or its native nftables firewall); nft is the default' }],
  ['no Docker chains and no legacy table loaded', null, EMPTY, null, { backend: 'nft', reason: 'no Docker chains found (Docker not started, or its native nftables firewall); nft is the default' }],
  ['no nft table readable, Docker in legacy', null, null, DOCKER, { backend: 'legacy', reason: "Docker's nat chains are in the legacy backend" }],
  ['an override to legacy wins over Docker in nft', 'legacy', DOCKER, EMPTY, { backend: 'legacy', reason: 'backend legacy set by configuration' }],
  ['an override to nft wins over Docker in legacy', 'nft', EMPTY, DOCKER, { backend: 'nft', reason: 'backend nft set by configuration' }],
];

for (const [situation, override, nft, legacy, expected] of cases) {
  test(`chooseBackend: ${situation} -> ${expected.backend}`, () => {
    assert.deepEqual(chooseBackend(override, nft, legacy), expected);
  });
}
