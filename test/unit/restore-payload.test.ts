import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compareChain } from '../../src/core/chain-compare.js';
import { renderRemoval, renderTableRestore } from '../../src/core/restore-payload.js';
import { config, desiredOf, protectedLines, ruleLines, tableOf } from './support.js';

const JUMP = '-m comment --comment "imds-guard: metadata endpoint protection"';

describe('renderRemoval', () => {
  // Every chain is flushed before any is deleted: a chain still jumped to from another of
  // ours cannot be deleted (iptables-nft-restore: "CHAIN_DEL failed (Device or resource busy)").
  test('deletes every reference to our chains, wherever they are, by their saved text, then flushes every chain, then deletes them', () => {
    const table = tableOf(
      'filter',
      ':IMDS-GUARD-FWD - [0:0]',
      ':IMDS-GUARD-OUT - [0:0]',
      ':DOCKER-USER - [0:0]',
      `-A FORWARD ${JUMP} -j IMDS-GUARD-FWD`,
      '-A FORWARD -j DOCKER-USER',
      `-A OUTPUT ${JUMP} -j IMDS-GUARD-OUT`,
      '-A DOCKER-USER -m comment --comment "say \\"hi\\"" -g IMDS-GUARD-FWD',
      '-A DOCKER-USER -j RETURN',
      '-A IMDS-GUARD-FWD -j REJECT --reject-with tcp-reset',
      '-A IMDS-GUARD-OUT -j IMDS-GUARD-FWD',
    );
    assert.equal(
      renderRemoval(table),
      `*filter
-D FORWARD ${JUMP} -j IMDS-GUARD-FWD
-D DOCKER-USER -m comment --comment "say \\"hi\\"" -g IMDS-GUARD-FWD
-D OUTPUT ${JUMP} -j IMDS-GUARD-OUT
:IMDS-GUARD-FWD - [0:0]
:IMDS-GUARD-OUT - [0:0]
-X IMDS-GUARD-FWD
-X IMDS-GUARD-OUT
COMMIT
`,
    );
    assert.equal(renderRemoval(table) !== null, true);
  });

  test('a chain without a jump is flushed and deleted', () => {
    assert.equal(renderRemoval(tableOf('nat', ':IMDS-GUARD - [0:0]', '-A IMDS-GUARD -j RETURN')), '*nat\n:IMDS-GUARD - [0:0]\n-X IMDS-GUARD\nCOMMIT\n');
  });

  test('a table with nothing of ours needs no transaction, even with a chain whose name starts like ours', () => {
    const table = tableOf('nat', ':IMDS-GUARD-OLD - [0:0]', '-A PREROUTING -j IMDS-GUARD-OLD', '-A PREROUTING -m comment --comment "IMDS-GUARD" -j RETURN');
    assert.equal(renderRemoval(table), null);
    assert.equal(renderRemoval(table) !== null, false);
  });
});

describe('renderTableRestore', () => {
  const c = config({ endpoints: ['169.254.169.254'] });
  const want = desiredOf(c).ipv4;
  const nat = want.chains[0]!;
  const render = (...lines: string[]) => {
    const saved = tableOf('nat', ...lines);
    return renderTableRestore('nat', [compareChain(nat, saved, [])], saved);
  };

  test('a converged table renders no transaction', () => {
    assert.equal(render(...protectedLines(want, 'nat')), null);
  });

  test('the same rules printed with long options and quoted values are converged (compared by meaning, not text)', () => {
    const spelled = ruleLines(nat).map((l) => l.replace('-d 169.254.169.254/32', '--destination 169.254.169.254').replace(/--comment (imds-guard:\S+)/, '--comment "$1"'));
    assert.equal(render(`:IMDS-GUARD - [0:0]`, `-A PREROUTING ${JUMP} -j IMDS-GUARD`, ...spelled), null);
  });

  test('a chain rewrite and a jump move go into a single transaction, the chain first', () => {
    assert.equal(
      render(':IMDS-GUARD - [0:0]', '-A PREROUTING -j ACCEPT', `-A PREROUTING ${JUMP} -j IMDS-GUARD`),
      `*nat\n:IMDS-GUARD - [0:0]\n${ruleLines(nat)[0]}\n-D PREROUTING ${JUMP} -j IMDS-GUARD\n-I PREROUTING 1 ${JUMP} -j IMDS-GUARD\nCOMMIT\n`,
    );
  });

  test('a jump by goto is one of ours to delete: a chain is only ever entered by our canonical jump', () => {
    assert.equal(
      render(...protectedLines(want, 'nat').filter((l) => !l.startsWith('-A PREROUTING')), '-A PREROUTING -g IMDS-GUARD'),
      `*nat\n-D PREROUTING -g IMDS-GUARD\n-I PREROUTING 1 ${JUMP} -j IMDS-GUARD\nCOMMIT\n`,
    );
  });

  test('no desired chain in the table: what is ours there is removed', () => {
    const saved = tableOf('nat', ...protectedLines(want, 'nat'));
    assert.equal(renderTableRestore('nat', [], saved), `*nat\n-D PREROUTING ${JUMP} -j IMDS-GUARD\n:IMDS-GUARD - [0:0]\n-X IMDS-GUARD\nCOMMIT\n`);
  });
});
