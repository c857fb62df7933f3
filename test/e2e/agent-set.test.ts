import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SET_RULE, agentSuite, coveredThroughSet, mustDocker, natSave, setSave, timedProbe } from '../helpers/agent.js';

/**
 * The set's whole life under the agent: here the lab's own custom bridge (labcustom0)
 * is a configured interface with rules of its own, so the set exists only while the
 * networks this test creates do. The first custom-named network brings the set and its
 * rule, the next ones are member inserts only, and the last one removed takes both
 * away; none of it is drift.
 */
const INTERFACES = ['--interfaces', 'docker0,docker_gwbridge,br-+,labcustom0'];
const suite = agentSuite('e2eagent-set', { prepare: () => ({ extraArgs: INTERFACES }) });
const { skip } = suite;

const NETWORKS = [
  { network: 'set-first', bridge: 'setfirst0' },
  { network: 'set-second', bridge: 'setsecond0' },
  { network: 'set-third', bridge: 'setthird0' },
];

test('the set comes with the first custom-named network, the next ones cost no nat transaction, and it goes with the last; no drift', { skip }, async (t) => {
  const l = suite.lab();
  const a = await suite.agent();
  const start = a.mark();
  assert.equal(await setSave(l), '', 'a set exists with no custom-named bridge to hold');
  assert.doesNotMatch(await natSave(l), SET_RULE);
  assert.match(await natSave(l), /^-A IMDS-GUARD -d 169\.254\.169\.254\/32 -i labcustom0 /m, 'a configured name keeps its own rule');
  t.after(async () => {
    for (const n of NETWORKS) await l.docker(['network', 'rm', n.network]);
  });

  for (const [i, n] of NETWORKS.entries()) {
    const from = a.mark();
    await mustDocker(l, ['network', 'create', '-o', `com.docker.network.bridge.name=${n.bridge}`, n.network]);
    await a.waitFor(`covered ${n.bridge}`, (x) => x.event === 'covered' && x.interface === n.bridge, { from });
    assert.ok(await coveredThroughSet(l, n.bridge), `${n.bridge} is not covered through the set`);
    const nat = a.lines().slice(from).filter((x) => x.msg === 'applied nat transaction');
    if (i === 0) assert.ok(nat.length > 0, 'the first custom-named network did not add the set rule');
    else assert.deepEqual(nat, [], `${n.bridge} rewrote the nat table`);
  }
  const p = await timedProbe(l, NETWORKS[1]!.network);
  assert.ok(p.refused && !p.gotCredentials, p.output);

  const removing = a.mark();
  for (const n of NETWORKS) await mustDocker(l, ['network', 'rm', n.network]);
  for (const n of NETWORKS) await a.waitFor(`uncovered ${n.bridge}`, (x) => x.event === 'uncovered' && x.interface === n.bridge, { from: removing });
  // The pass that drops the set rule destroys the set after it; a converged pass means all of that is done.
  await a.waitFor('a converged pass', (x) => x.event === 'reconciled' && x.converged === true, { from: removing, timeoutMs: 5_000 });
  assert.doesNotMatch(await natSave(l), SET_RULE);
  assert.equal(await setSave(l), '', 'the set outlived the last custom-named network');
  assert.deepEqual(a.events('drift', start), [], 'the set coming and going was reported as drift');

  const audit = await a.cli('audit', ['--format', 'json', ...INTERFACES]);
  assert.equal(audit.code, 0, audit.stdout);
});
