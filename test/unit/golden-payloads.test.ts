import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { toCgroupPath } from '../../src/core/cgroup.js';
import { compareChain } from '../../src/core/chain-compare.js';
import { CLOUDS } from '../../src/core/clouds.js';
import type { Config } from '../../src/core/config.js';
import type { DesiredRule } from '../../src/core/desired.js';
import { type Family, FAMILIES } from '../../src/core/family.js';
import { hostNetRules } from '../../src/core/host-network.js';
import { renderTableRestore } from '../../src/core/restore-payload.js';
import { type SavedTable, parseSave } from '../../src/core/saved-table.js';
import { config, desiredOf, tableOf } from './support.js';

/*
 * The full restore payloads a fresh host gets, like kube-proxy's golden payload tests: a
 * change to any rule's text, order, comment or id shows here as a diff to review. The
 * files are the reviewed truth; `UPDATE_GOLDEN=1` rewrites them from the code, and the
 * diff must then be read line by line before it is committed.
 */
const DIR = join(import.meta.dirname, '..', 'fixtures', 'golden');
const TABLES = ['nat', 'filter'] as const;

/** Every table of both families, in the order a pass writes them, as one text. */
function freshPayloads(c: Config, output: Partial<Record<Family, readonly DesiredRule[]>> = {}, ipv4: ReadonlyMap<string, SavedTable> = new Map()): string {
  const want = desiredOf(c, output);
  const parts: string[] = [];
  for (const family of FAMILIES) {
    for (const table of TABLES) {
      const saved = (family === 'ipv4' ? ipv4.get(table) : undefined) ?? tableOf(table);
      const diffs = want[family].chains.filter((x) => x.table === table).map((x) => compareChain(x, saved, c.allow));
      const payload = renderTableRestore(table, diffs, saved);
      parts.push(payload === null ? `# ${family} ${table}: nothing to write\n` : `# ${family} ${table}\n${payload}`);
    }
  }
  return parts.join('');
}

function golden(name: string, actual: string): void {
  const file = join(DIR, `${name}.restore`);
  if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(file, actual);
  assert.equal(actual, readFileSync(file, 'utf8'), `${file} differs (UPDATE_GOLDEN=1 rewrites it; review the diff)`);
}

describe('golden restore payloads for a fresh host', () => {
  test('the default configuration (169.254.169.254:80 and [fd00:ec2::254]:80)', () => golden('default', freshPayloads(config())));

  for (const cloud of CLOUDS) {
    test(`the ${cloud} preset`, () => golden(`cloud-${cloud}`, freshPayloads(config({ cloud }))));
  }

  test("Docker 20.10's tables (test/fixtures/docker-20.10-swarm.nft.save): the backstop jump also at the top of DOCKER-USER, Docker's rules not named", () => {
    const docker = parseSave(readFileSync(join(import.meta.dirname, '..', 'fixtures', 'docker-20.10-swarm.nft.save'), 'utf8'));
    golden('docker-20.10', freshPayloads(config(), {}, docker));
  });

  test('allowed interfaces and a DNAT target', () => golden('allow-dnat', freshPayloads(config({ allow: ['vmbr0', 'eth1'], target: 'dnat:10.0.0.53:8080', target6: 'redirect:2' }))));

  test('host-network containers: an exemption, the parent rule and a container outside the parent, with their cgroup inodes', () => {
    const c = config();
    const obs = {
      parent: { path: toCgroupPath('/docker')!, inode: 4242 },
      containers: [
        { id: 'e'.repeat(64), name: 'ecs-agent', cgroup: toCgroupPath(`/docker/${'e'.repeat(64)}`)!, joinsHostVia: null, coverage: 'exempt' as const, reason: 'label' },
        { id: 'a'.repeat(64), name: 'node-exporter', cgroup: toCgroupPath(`/docker/${'a'.repeat(64)}`)!, joinsHostVia: null, coverage: 'parent-rule' as const, reason: 'under /docker' },
        { id: 'b'.repeat(64), name: 'outside', cgroup: toCgroupPath(`/ci.slice/docker-${'b'.repeat(64)}.scope`)!, joinsHostVia: null, coverage: 'own-rule' as const, reason: 'outside' },
      ],
      inodes: new Map([
        ['e'.repeat(64), 5001],
        ['b'.repeat(64), 5002],
      ]),
      unavailable: null,
    };
    golden('host-network', freshPayloads(c, { ipv4: hostNetRules('ipv4', c.endpoints, obs), ipv6: hostNetRules('ipv6', c.endpoints, obs) }));
  });
});
