import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Agent, CRED_MARKER, CRED_REQUEST, LAB_IMAGE, type LogLine, MD_ADDR, agentSuite, auditJson, filterSave, mustDocker, natSave, ownLines, restoresOf, timedExec, timedProbe } from '../helpers/agent.js';
import type { Lab } from '../helpers/lab.js';

/**
 * Issue 11's coverage, by traffic: bridges whose names no per-interface rule could
 * follow (`p+x` reads as a wildcard to iptables, `bang!x` and `c,1` trip shells and
 * ipset, 15 bytes is the kernel's limit), one created while the agent is down, and a
 * running container connected to a new custom-named network and probing at once, 20
 * times. Each is refused; none of it changes imds-guard's chains or writes the nat
 * table. Every claim has its control: the same probe reads the credentials before the
 * agent runs.
 */
const suite = agentSuite('e2e-coverage', { startEarly: false });
const { skip } = suite;

interface Net {
  readonly network: string;
  readonly bridge: string;
}
const ODD: readonly Net[] = [
  { network: 'odd-plus', bridge: 'p+x' },
  { network: 'odd-bang', bridge: 'bang!x' },
  { network: 'odd-comma', bridge: 'c,1' },
  { network: 'odd-fifteen', bridge: 'imdsg15charname' },
];
// Created while no agent runs, then the agent starts.
const DOWN: Net = { network: 'odd-down', bridge: 'dn+1!' };
// The racing container's first network: internal, so it has no route anywhere until connected.
const ISOLATED = 'e2e-isolated';
const ROUNDS = 20;
const raceNet = (i: number): Net => ({ network: `race-${i}`, bridge: `rc+${i}` });

const createNet = (l: Lab, n: Net): Promise<string> => mustDocker(l, ['network', 'create', '-o', `com.docker.network.bridge.name=${n.bridge}`, n.network]);
const removeNet = async (l: Lab, n: Net | string): Promise<void> => void (await l.docker(['network', 'rm', typeof n === 'string' ? n : n.network]));

/** imds-guard's lines (chains, rules, jumps) in both tables of both families. */
async function ownState(l: Lab): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const family of ['ipv4', 'ipv6'] as const) {
    out[`${family} nat`] = ownLines(await natSave(l, family));
    out[`${family} filter`] = ownLines(await filterSave(l, family));
  }
  return out;
}

// A container that asks for the credentials every 50 ms, for as long as it runs; each
// attempt's outcome goes to its log.
const LOOP = `while true; do printf '${CRED_REQUEST}' | nc -w 1 ${MD_ADDR} 80 2>&1; echo; sleep 0.05; done`;
const startLooper = (l: Lab, name: string): Promise<string> => mustDocker(l, ['run', '-d', '--pull', 'never', '--name', name, '--network', ISOLATED, LAB_IMAGE, 'sh', '-c', LOOP]);
async function logsOf(l: Lab, name: string): Promise<string> {
  const r = await l.docker(['logs', name]);
  return r.stdout + r.stderr;
}
const count = (text: string, what: string): number => text.split(what).length - 1;

// Drift events of every agent this file starts: the last test judges them all.
const driftSeen: LogLine[] = [];
const collectDrift = (a: Agent, from = 0): void => void driftSeen.push(...a.events('drift', from));

test('control: without the agent, a container on each odd-named bridge, and a running container connected to a new network, read the credentials', { skip }, async (t) => {
  const l = suite.lab();
  await mustDocker(l, ['network', 'create', '--internal', ISOLATED]);
  for (const n of [...ODD, DOWN]) {
    await createNet(l, n);
    try {
      const link = await l.inHost('ip', ['link', 'show', n.bridge]);
      assert.equal(link.code, 0, `Docker did not make a bridge named ${n.bridge}: ${link.stderr}`);
      const p = await timedProbe(l, n.network);
      assert.ok(p.gotCredentials, `no credentials through ${n.bridge} without the agent:\n${p.output}`);
    } finally {
      await removeNet(l, n);
    }
  }
  // The race below, once, unprotected: the connected container reads them at once.
  await startLooper(l, 'looper-control');
  t.after(async () => void (await l.docker(['rm', '-f', 'looper-control'])));
  const n = raceNet(99);
  await createNet(l, n);
  try {
    await mustDocker(l, ['network', 'connect', n.network, 'looper-control']);
    const p = await timedExec(l, 'looper-control');
    assert.ok(p.gotCredentials, `a container connected to ${n.network} got no credentials without the agent:\n${p.output}`);
    // Its attempt in flight at the connect may wait out nc's 1 s timeout first.
    let read = 0;
    for (let i = 0; i < 50 && read === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      read = count(await logsOf(l, 'looper-control'), CRED_MARKER);
    }
    assert.ok(read > 0, 'the looping container never read the credentials without the agent');
  } finally {
    await l.docker(['network', 'disconnect', '-f', n.network, 'looper-control']);
    await removeNet(l, n);
  }
});

test('bridges named p+x, bang!x, c,1 and a 15-character name, created while the agent runs, are refused, and imds-guard\'s chains are identical before and after', { skip }, async (t) => {
  const l = suite.lab();
  const a = await suite.agent();
  const before = await ownState(l);
  const from = a.mark();
  for (const n of ODD) {
    const created = Date.now();
    await createNet(l, n);
    const p = await timedProbe(l, n.network);
    assert.equal(p.gotCredentials, false, `${n.bridge} got the credentials:\n${p.output}`);
    assert.ok(p.refused, `${n.bridge} was not refused:\n${p.output}`);
    const covered = await a.waitFor(`covered ${n.network}`, (x) => x.event === 'covered' && x.network === n.network, { from });
    assert.equal(covered.interface, n.bridge, JSON.stringify(covered));
    assert.equal(covered.coverage, 'forwarded', JSON.stringify(covered));
    t.diagnostic(`${n.bridge}: refused ${p.innerMs} ms into the attempt, ${Date.now() - created} ms after create was called`);
  }
  assert.deepEqual(await ownState(l), before, "creating the networks changed imds-guard's chains");
  assert.deepEqual(restoresOf(a, from, 'nat').map((x) => x.family), [], 'creating the networks wrote the nat table');
  t.diagnostic(`filter writes while they were created: ${restoresOf(a, from, 'filter').length}`);
  collectDrift(a);
});

test('a bridge created while the agent is down is refused before the agent is back and after, with no nat write when it starts', { skip }, async () => {
  const l = suite.lab();
  const before = await ownState(l);
  const old = await suite.agent();
  collectDrift(old);
  await suite.stopAgent();
  await createNet(l, DOWN);
  const gap = await timedProbe(l, DOWN.network);
  assert.ok(gap.refused && !gap.gotCredentials, `with the agent down, ${DOWN.bridge} was not refused:\n${gap.output}`);

  const a = await suite.agent();
  const p = await timedProbe(l, DOWN.network);
  assert.ok(p.refused && !p.gotCredentials, `${DOWN.bridge} was not refused:\n${p.output}`);
  assert.deepEqual(restoresOf(a, 0, 'nat'), [], 'the agent wrote the nat table at start');
  assert.deepEqual(await ownState(l), before, "the network created while the agent was down changed imds-guard's chains");
  const { report } = await auditJson(a);
  const view = report.networks.find((x) => x.name === DOWN.network);
  assert.equal(view?.coverage, 'forwarded', JSON.stringify(view));
  assert.equal(view?.interface, DOWN.bridge);
  for (const n of ODD) assert.equal(report.networks.find((x) => x.name === n.network)?.interface, n.bridge, `audit does not list ${n.network}`);
});

test(`a running container connected to a new custom-named network and probing at once is refused, ${ROUNDS} times, with no nat write`, { skip }, async (t) => {
  const l = suite.lab();
  const a = await suite.agent();
  await startLooper(l, 'looper');
  t.after(async () => void (await l.docker(['rm', '-f', 'looper'])));
  const from = a.mark();
  const outcomes: string[] = [];
  const leaks: string[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const n = raceNet(i);
    await createNet(l, n);
    try {
      await mustDocker(l, ['network', 'connect', n.network, 'looper']);
      const p = await timedExec(l, 'looper');
      outcomes.push(p.refused ? 'refused' : p.gotCredentials ? 'LEAK' : p.output.trim().split('\n')[0] ?? '?');
      if (p.gotCredentials) leaks.push(`${n.network}: ${p.output}`);
      // Let the looping container try a few times on this network too.
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      await l.docker(['network', 'disconnect', '-f', n.network, 'looper']);
      await removeNet(l, n);
    }
  }
  const logs = await logsOf(l, 'looper');
  t.diagnostic(`exec probes: ${outcomes.join(' ')}; the looping container: ${count(logs, 'Connection refused')} refused, ${count(logs, CRED_MARKER)} with credentials`);
  assert.deepEqual(leaks, [], 'an exec right after connect read the credentials');
  assert.equal(count(logs, CRED_MARKER), 0, 'the looping container read the credentials');
  assert.deepEqual(outcomes.filter((o) => o !== 'refused'), [], 'an exec right after connect was not refused');
  // Otherwise the loop never had a route while connected and proves nothing.
  assert.ok(count(logs, 'Connection refused') >= ROUNDS, `the looping container was refused only ${count(logs, 'Connection refused')} times`);
  assert.deepEqual(restoresOf(a, from, 'nat'), [], 'the creates, connects and removes wrote the nat table');
  t.diagnostic(`filter writes during the ${ROUNDS} rounds: ${restoresOf(a, from, 'filter').length}`);
  collectDrift(a);
});

test('creating, connecting and removing networks was never logged as drift', { skip }, async () => {
  const a = await suite.agent();
  collectDrift(a);
  const seen = [...new Set(driftSeen)].map((d) => `${String(d.family)} ${String(d.table)} ${String(d.kind)}: ${JSON.stringify(d.evidence)}`);
  assert.deepEqual(seen, [], 'network changes were reported as drift');
});
