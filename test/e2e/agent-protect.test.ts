import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CRED_MARKER, CRED_REQUEST, LAB_IMAGE, MD_ADDR, agentSuite, coveredThroughSet, mustDocker, natSave, noopRunMs, setSave, timedProbe } from '../helpers/agent.js';
import { LAB_NETWORKS, type Lab } from '../helpers/lab.js';

/**
 * The agent against a real dockerd: what a container on each kind of Docker network
 * sees once `imds-guard run` is up, a connection opened before it started, and
 * networks created while it runs, each raced by a container started at once.
 */
// The agent starts in the second test, after a connection to the endpoint is open.
const suite = agentSuite('e2eagent-protect', { startEarly: false });
const { skip } = suite;

// The request goes out this long after the connection opens: time for the agent to
// start in between. busybox httpd waits 60 s for a request's headers, so the held
// connection is still open when the request arrives (the control run below shows it).
const HOLD_S = 5;
const HELD_REQUEST = `(sleep ${HOLD_S}; printf '${CRED_REQUEST}') | nc ${MD_ADDR} 80 2>&1; echo "nc exit $?"`;

async function runHeld(l: Lab): Promise<{ id: string; startedAt: number }> {
  const id = await mustDocker(l, ['run', '-d', '--pull', 'never', '--network', 'bridge', LAB_IMAGE, 'sh', '-c', HELD_REQUEST]);
  return { id, startedAt: Date.now() };
}

async function outputOf(l: Lab, id: string): Promise<string> {
  await mustDocker(l, ['wait', id], 30_000);
  const r = await l.docker(['logs', id]);
  await l.docker(['rm', '-f', id]);
  return r.stdout + r.stderr;
}

test('without the agent, containers on every lab network read the credentials, also over a connection held open for 5 s', { skip }, async () => {
  const l = suite.lab();
  const held = await runHeld(l);
  const probes = await Promise.all(LAB_NETWORKS.map(async (n) => ({ n, p: await timedProbe(l, n) })));
  for (const { n, p } of probes) assert.ok(p.gotCredentials, `no credentials through ${n} before the agent:\n${p.output}`);
  const out = await outputOf(l, held.id);
  assert.ok(out.includes(CRED_MARKER), `the control request sent ${HOLD_S} s after connecting got no credentials, so the test below would prove nothing:\n${out}`);
});

test('a connection opened before the agent started gets nothing for a request sent after: tracked connections are cut', { skip }, async () => {
  const l = suite.lab();
  const held = await runHeld(l);
  // Wait until the container's connection is really open (and tracked) before the agent starts.
  let tracked = '';
  for (let i = 0; i < 100 && !/ESTABLISHED/.test(tracked); i++) {
    tracked = (await l.inHost('conntrack', ['-L', '-p', 'tcp', '--orig-dst', MD_ADDR])).stdout;
    if (!/ESTABLISHED/.test(tracked)) await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(tracked, /ESTABLISHED/, 'the held connection never showed up in conntrack');

  const agent = await suite.agent();
  const readyAt = Date.now();
  const cut = await agent.waitFor('a conntrack cut', (x) => x.msg === 'cut tracked connections opened before protection');
  assert.ok(Number(cut.deleted) >= 1, JSON.stringify(cut));
  // Otherwise the request may have been answered before there was anything to cut.
  assert.ok(readyAt - held.startedAt < (HOLD_S - 1) * 1000, `the agent took ${readyAt - held.startedAt} ms to start; the request was due after ${HOLD_S} s`);

  const out = await outputOf(l, held.id);
  assert.ok(!out.includes(CRED_MARKER), `credentials came back over a connection opened before protection:\n${out}`);
  assert.doesNotMatch(out, /HTTP\/1\.[01] 200/, out);
});

test('with the agent, containers on docker0, a user bridge, a custom-named bridge and an overlay are refused at once', { skip }, async (t) => {
  const l = suite.lab();
  await suite.agent();
  for (const n of LAB_NETWORKS) {
    const p = await timedProbe(l, n);
    // The outer figure is for the log only: container start-up on a loaded machine varies by seconds.
    const baseline = await noopRunMs(l, n);
    t.diagnostic(`${n}: refused after ${p.innerMs} ms inside the container; docker run ${Math.round(p.ms)} ms vs ${Math.round(baseline)} ms for a no-op container`);
    assert.equal(p.gotCredentials, false, `${n} got the credentials:\n${p.output}`);
    assert.ok(p.refused, `${n} was not refused:\n${p.output}`);
    assert.ok(p.innerMs < 500, `${n}: the refusal took ${p.innerMs} ms inside the container`);
  }
});

// Custom bridge names need a rule of their own (br-+ already covers Docker's default
// names), so most rounds use one; the others show a plain user network is covered too.
const RACE_ROUNDS = Array.from({ length: 10 }, (_, i) => ({ network: `e2erace${i}`, bridge: i % 5 === 4 ? null : `e2erace${i}br` }));

test('a network created while the agent runs is protected before the first container on it sends a packet (10 create-then-run races)', { skip }, async (t) => {
  const l = suite.lab();
  const a = await suite.agent();
  const start = a.mark();
  t.after(async () => {
    for (const r of RACE_ROUNDS) await l.docker(['network', 'rm', r.network]);
  });
  const leaks: string[] = [];
  for (const r of RACE_ROUNDS) {
    const from = a.mark();
    await mustDocker(l, ['network', 'create', ...(r.bridge === null ? [] : ['-o', `com.docker.network.bridge.name=${r.bridge}`]), r.network]);
    const createdAt = Date.now();
    const p = await timedProbe(l, r.network);
    if (p.gotCredentials || !p.refused) leaks.push(`${r.network}: ${p.output}`);
    if (r.bridge !== null) {
      const covered = await a.waitFor(`covered ${r.bridge}`, (x) => x.event === 'covered' && x.interface === r.bridge, { from });
      t.diagnostic(`${r.network} (${r.bridge}): rule logged ${Date.parse(String(covered.time)) - createdAt} ms after create returned; probe refused after ${Math.round(p.ms)} ms`);
    }
  }
  assert.deepEqual(leaks, [], 'a container reached the metadata server');
  // Custom bridge names are members of the set, matched by one fixed rule per endpoint.
  for (const r of RACE_ROUNDS) if (r.bridge !== null) assert.ok(await coveredThroughSet(l, r.bridge), `${r.bridge} is not covered through the set`);

  // Removing them shrinks the chain again, and that is coverage, not drift.
  const removing = a.mark();
  for (const r of RACE_ROUNDS) await mustDocker(l, ['network', 'rm', r.network]);
  for (const r of RACE_ROUNDS) {
    if (r.bridge !== null) await a.waitFor(`uncovered ${r.bridge}`, (x) => x.event === 'uncovered' && x.interface === r.bridge, { from: removing });
  }
  assert.doesNotMatch(await natSave(l), /e2erace/);
  assert.doesNotMatch(await setSave(l), /e2erace/);
  assert.deepEqual(a.events('drift', start), [], 'creating or removing networks was reported as drift');
});
