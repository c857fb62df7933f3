import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { resolveConfig } from '../../src/core/config.js';
import { configDigest, decideOnOtherAgent, describePeer, parsePeerInfo } from '../../src/core/peer.js';

const config = (values: Record<string, unknown>) => resolveConfig([{ source: 'test', values }]);

describe('parsePeerInfo: what another process says about itself is untrusted', () => {
  test('an imds-guard answer is read field by field', () => {
    assert.deepEqual(parsePeerInfo('{"pid":4242,"verb":"apply","version":"0.1.0"}'), { pid: 4242, verb: 'apply', version: '0.1.0' });
    assert.deepEqual(parsePeerInfo('{"pid":7,"verb":"run","version":"0.1.0","configDigest":"0123456789abcdef","extra":true}'), { pid: 7, verb: 'run', version: '0.1.0', configDigest: '0123456789abcdef' });
  });
  const refused: readonly [string, string | null][] = [
    ['no answer', null],
    ['not JSON', 'hello'],
    ['a JSON string', '"imds-guard"'],
    ['a pid that is not a number', '{"pid":"1","verb":"run","version":"0.1.0"}'],
    ['pid 0', '{"pid":0,"verb":"run","version":"0.1.0"}'],
    ['a pid above pid_max', '{"pid":99999999,"verb":"run","version":"0.1.0"}'],
    ['a verb with a terminal escape', '{"pid":1,"verb":"run\\u001b[2J","version":"0.1.0"}'],
    ['a version with a newline', '{"pid":1,"verb":"run","version":"0.1.0\\nroot ok"}'],
    ['a digest that is not hex', '{"pid":1,"verb":"run","version":"0.1.0","configDigest":"zzzzzzzzzzzzzzzz"}'],
    ['an answer longer than 512 characters', `{"pid":1,"verb":"run","version":"0.1.0","pad":"${'x'.repeat(600)}"}`],
  ];
  for (const [what, answer] of refused) {
    test(`${what} is not taken as imds-guard`, () => {
      assert.equal(parsePeerInfo(answer), null);
      assert.equal(describePeer(parsePeerInfo(answer)), 'a process that does not say it is imds-guard');
    });
  }
  test('a holder is described by verb, pid and version', () => {
    assert.equal(describePeer({ pid: 4242, verb: 'apply', version: '0.1.0' }), 'imds-guard apply (pid 4242, version 0.1.0)');
  });
});

describe('configDigest', () => {
  test('the same settings give the same digest whatever order they came in', () => {
    const a = config({ allow: ['docker0', 'eth1'], mode: 'report', lockWaitSeconds: 7 });
    const b = config({ lockWaitSeconds: 7, mode: 'report', allow: ['docker0', 'eth1'] });
    assert.equal(configDigest(a), configDigest(b));
    assert.match(configDigest(a), /^[0-9a-f]{16}$/);
  });
  test('a different allow list, target or mode gives a different digest', () => {
    const base = configDigest(config({}));
    assert.notEqual(configDigest(config({ allow: ['docker0'] })), base);
    assert.notEqual(configDigest(config({ target: 'redirect:2' })), base);
    assert.notEqual(configDigest(config({ mode: 'report' })), base);
    assert.notEqual(configDigest(config({ allow: ['eth1', 'docker0'] })), configDigest(config({ allow: ['docker0', 'eth1'] })), 'allow order is part of the rules');
  });
});

describe('decideOnOtherAgent', () => {
  const ours = configDigest(config({}));
  const agent = (configDigest: string) => ({ answer: { pid: 31, verb: 'run', version: '0.1.0', configDigest } });
  test('nobody holds the agent name: start', () => {
    assert.deepEqual(decideOnOtherAgent(ours, null), { action: 'start' });
  });
  test('an agent with the same configuration: start, with a warning', () => {
    const d = decideOnOtherAgent(ours, agent(ours));
    assert.equal(d.action, 'warn');
  });
  test('an agent with a different configuration: refuse, naming its pid and both digests, on one line', () => {
    const d = decideOnOtherAgent(ours, agent('ffffffffffffffff'));
    assert.equal(d.action, 'refuse');
    assert.ok(d.action === 'refuse');
    assert.match(d.message, /^another agent, imds-guard run \(pid 31, version 0\.1\.0\), runs in this network namespace with a different configuration \(digest ffffffffffffffff, ours [0-9a-f]{16}\)/);
    assert.equal(d.message.includes('\n'), false);
  });
  test('a holder that does not answer as an agent cannot stop the start (it may be anyone): warn', () => {
    assert.equal(decideOnOtherAgent(ours, { answer: null }).action, 'warn');
    assert.equal(decideOnOtherAgent(ours, { answer: { pid: 5, verb: 'apply', version: '0.1.0' } }).action, 'warn');
  });
});
