import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { resolveConfig } from '../../src/core/config.js';
import { desiredFamily } from '../../src/core/desired.js';
import { compareNat } from '../../src/core/nat-compare.js';
import { parseNatTable } from '../../src/core/nat-table.js';
import { holdsOurs, renderRemoval, renderRestore } from '../../src/core/restore-payload.js';

const nat = (...lines: string[]) => parseNatTable(['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]', ...lines, 'COMMIT', ''].join('\n'));
const JUMP = '-A PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD';

describe('renderRemoval', () => {
  test('deletes every reference to our chain, wherever it is, by its saved text, then flushes and deletes the chain', () => {
    const table = nat(':IMDS-GUARD - [0:0]', ':DOCKER - [0:0]', '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER', JUMP, '-A OUTPUT -d 169.254.169.254/32 -g IMDS-GUARD', '-A DOCKER -m comment --comment "say \\"hi\\"" -j IMDS-GUARD', '-A IMDS-GUARD -i docker0 -j REDIRECT --to-ports 1');
    assert.equal(renderRemoval(table), `*nat
-D PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
-D OUTPUT -d 169.254.169.254/32 -g IMDS-GUARD
-D DOCKER -m comment --comment "say \\"hi\\"" -j IMDS-GUARD
:IMDS-GUARD - [0:0]
-X IMDS-GUARD
COMMIT
`);
    assert.equal(holdsOurs(table), true);
  });

  test('a chain without a jump is flushed and deleted', () => {
    assert.equal(renderRemoval(nat(':IMDS-GUARD - [0:0]', '-A IMDS-GUARD -j RETURN')), '*nat\n:IMDS-GUARD - [0:0]\n-X IMDS-GUARD\nCOMMIT\n');
  });

  test('a table with nothing of ours needs no transaction, even with a chain whose name starts like ours', () => {
    const table = nat(':IMDS-GUARD-OLD - [0:0]', '-A PREROUTING -j IMDS-GUARD-OLD', '-A PREROUTING -m comment --comment "IMDS-GUARD" -j RETURN');
    assert.equal(renderRemoval(table), null);
    assert.equal(holdsOurs(table), false);
  });
});

describe('renderRestore', () => {
  const config = resolveConfig([{ source: 'test', values: { interfaces: ['docker0'], endpoints: ['169.254.169.254'] } }]);
  const desired = desiredFamily(config, 'ipv4', ['docker0']);
  const OURS = '-A IMDS-GUARD -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment "imds-guard:1189f431dc7c" -j REDIRECT --to-ports 1';
  const render = (...lines: string[]) => renderRestore(desired, compareNat({ desired, table: nat(...lines), family: 'ipv4', backend: 'nft', interfaces: ['docker0'] }));

  test('an altered jump with quotes in its comment is deleted by exactly its saved text', () => {
    assert.equal(render(':IMDS-GUARD - [0:0]', '-A PREROUTING -m comment --comment "a \\"b\\" c" -j IMDS-GUARD', OURS), `*nat
-D PREROUTING -m comment --comment "a \\"b\\" c" -j IMDS-GUARD
-I PREROUTING 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
COMMIT
`);
  });

  test('one chain rewrite and one jump move go into a single transaction, chain first', () => {
    assert.equal(render(':IMDS-GUARD - [0:0]', '-A PREROUTING -i docker0 -j ACCEPT', JUMP), `*nat
:IMDS-GUARD - [0:0]
-A IMDS-GUARD -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:1189f431dc7c -j REDIRECT --to-ports 1
-D PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
-I PREROUTING 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
COMMIT
`);
  });

  test('a converged table renders no transaction', () => {
    assert.equal(render(':IMDS-GUARD - [0:0]', JUMP, OURS), null);
  });
});
