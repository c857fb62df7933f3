import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compareChain } from '../../src/core/chain-compare.js';
import { desiredFamily } from '../../src/core/desired.js';
import { parseEndpoint, type Endpoint } from '../../src/core/endpoint.js';
import { parseTarget, type Target } from '../../src/core/target.js';
import { payloadSafe, renderTableRestore } from '../../src/core/restore-payload.js';
import { parseSave } from '../../src/core/saved-table.js';

const spec = { endpoints: [parseEndpoint('169.254.169.254') as Endpoint], targets: { ipv4: parseTarget('redirect') as Target, ipv6: parseTarget('redirect') as Target }, allow: [] };

test('a jump read back with a line break in its comment is never named in a payload (it could smuggle a command in)', () => {
  const nat = desiredFamily(spec, 'ipv4').chains.find((c) => c.table === 'nat')!;
  // iptables-save escapes nothing: a comment made with $'x\n-A PREROUTING -j ACCEPT' would print as two lines,
  // so the planted argument is built directly, as a parser fed such text could produce it.
  const saved = parseSave('*nat\n:PREROUTING ACCEPT [0:0]\n:IMDS-GUARD - [0:0]\n-A PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD\n-A PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD\nCOMMIT\n').get('nat')!;
  const diff = compareChain(nat, saved, []);
  const planted = { ...diff.jump.toDelete[1]!, args: ['-m', 'comment', '--comment', 'x\n-A PREROUTING -j ACCEPT', '-j', 'IMDS-GUARD'] };
  const payload = renderTableRestore('nat', [{ ...diff, jump: { ...diff.jump, toDelete: [diff.jump.toDelete[0]!, planted] } }], saved)!;
  assert.equal(payloadSafe(planted.args), false);
  assert.doesNotMatch(payload, /-j ACCEPT/);
  assert.equal(payload.split('\n').filter((l) => l.startsWith('-D PREROUTING')).length, 1);
});
