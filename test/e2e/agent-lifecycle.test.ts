import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { type Agent, agentSuite, filterSave, mustDocker, natSave, ownLines, restoresOf, rulesOf, tableSave, timedProbe, withoutOwn } from '../helpers/agent.js';
import { JUMP_LINE } from '../helpers/cli.js';
import type { Lab } from '../helpers/lab.js';

/**
 * The agent's life around Docker and signals: dockerd restarting under it, SIGHUP with
 * a bad and a good configuration, SIGTERM, and `remove` afterwards, which takes out the
 * nat chain and both filter chains and leaves every other line of both tables as it was;
 * the boot script, run after that, puts all three back.
 */
let configFile = '';
type Saves = Record<'ipv4' | 'ipv6', Record<'nat' | 'filter', string>>;
/** The lab host's tables before the agent first ran. */
let tablesBefore: Saves;

async function saves(l: Lab): Promise<Saves> {
  const family = async (f: 'ipv4' | 'ipv6'): Promise<Record<'nat' | 'filter', string>> => ({ nat: await tableSave(l, 'nat', f), filter: await tableSave(l, 'filter', f) });
  return { ipv4: await family('ipv4'), ipv6: await family('ipv6') };
}

const suite = agentSuite('e2eagent-life', {
  async prepare(lab) {
    tablesBefore = await saves(lab);
    configFile = join(lab.dir, 'config.yaml');
    writeFileSync(configFile, 'allow: []\n');
    return { configFile };
  },
});
const { skip } = suite;


/** Writes the configuration file and sends SIGHUP; returns the log mark from before the signal. */
function reloadWith(a: Agent, yaml: string): number {
  writeFileSync(configFile, yaml);
  const from = a.mark();
  a.signal('SIGHUP');
  return from;
}

const at = (l: { time?: string }): number => Date.parse(String(l.time));

test('dockerd restarts under the agent: disconnect and reconnect are logged, the rules stay throughout, a custom-named network created after is protected', { skip }, async (t) => {
  const l = suite.lab();
  const a = await suite.agent();
  const from = a.mark();
  // Read the nat table over and over while dockerd goes down and comes back.
  const samples: { at: number; ok: boolean }[] = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const [nat, filter] = await Promise.all([natSave(l), filterSave(l)]);
      const catchAll = rulesOf(nat, 'IMDS-GUARD').some((r) => r.endsWith('-j REDIRECT --to-ports 1'));
      const chains = rulesOf(filter, 'IMDS-GUARD-FWD').length > 0 && rulesOf(filter, 'IMDS-GUARD-OUT').length > 0;
      samples.push({ at: Date.now(), ok: nat.includes(JUMP_LINE) && catchAll && chains });
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  try {
    await l.restartDocker();
  } finally {
    sampling = false;
    await sampler;
  }
  const down = await a.waitFor('docker-disconnected', (x) => x.event === 'docker-disconnected', { from });
  const back = await a.waitFor('docker-reconnected', (x) => x.event === 'docker-reconnected', { from, timeoutMs: 40_000 });
  const outage = samples.filter((s) => s.at >= at(down) && s.at <= at(back));
  t.diagnostic(`Docker unreachable for ${at(back) - at(down)} ms; ${outage.length} of ${samples.length} samples of the nat table taken in that time`);
  assert.ok(outage.length >= 5, 'too few samples during the outage to say anything');
  assert.deepEqual(samples.filter((s) => !s.ok), [], 'the jump or a rule was missing at some point during the restart');

  const late = a.mark();
  await mustDocker(l, ['network', 'create', '-o', 'com.docker.network.bridge.name=life+late', 'life-late']);
  t.after(async () => void (await l.docker(['network', 'rm', 'life-late'])));
  await a.waitFor('covered life-late', (x) => x.event === 'covered' && x.network === 'life-late', { from: late });
  const p = await timedProbe(l, 'life-late');
  assert.ok(p.refused && !p.gotCredentials, p.output);
  const host = await timedProbe(l, 'host');
  assert.ok(host.refused && !host.gotCredentials, host.output);
  assert.deepEqual(restoresOf(a, from, 'nat'), [], 'the restart wrote the nat table');
  // Docker puts its bridges' FORWARD rules back on top when it starts: the agent moves the
  // backstop's jump above them again, and that is Docker's churn, not drift.
  t.diagnostic(`filter writes over the restart: ${restoresOf(a, from, 'filter').length}; docker-churn events: ${a.events('docker-churn', from).length}`);
  assert.deepEqual(a.events('drift', from).map((x) => `${String(x.table)} ${String(x.kind)} ${JSON.stringify(x.evidence)}`), [], 'the restart was reported as drift');
});

test('SIGHUP with a bad configuration file: reload-rejected, the agent keeps running on the old one and still repairs', { skip }, async () => {
  const l = suite.lab();
  const a = await suite.agent();
  // `interfaces` is the retired per-bridge key: refused with a pointer to `allow`.
  const from = reloadWith(a, 'interfaces: [docker0, "br-+"]\n');
  const rejected = await a.waitFor('reload-rejected', (x) => x.event === 'reload-rejected', { from });
  assert.match(String(rejected.err), /interfaces/, JSON.stringify(rejected));
  assert.match(String(rejected.err), /allow/, JSON.stringify(rejected));
  const wildcard = reloadWith(a, 'allow: ["br-+"]\n');
  const again = await a.waitFor('reload-rejected', (x) => x.event === 'reload-rejected', { from: wildcard });
  assert.match(String(again.err), /wildcard/, JSON.stringify(again));
  assert.ok(a.alive(), 'the agent exited');
  assert.deepEqual(a.events('reloaded', from), []);
  // Still enforcing: a flushed chain comes back at the next drift check.
  const r = await l.inHost('iptables', ['-t', 'nat', '-F', 'IMDS-GUARD']);
  assert.equal(r.code, 0, r.stderr);
  await a.waitFor('the repair', (x) => x.event === 'repaired' && (x.kinds as string[]).includes('rule-missing'), { from, timeoutMs: 5_000 });
  const p = await timedProbe(l, 'lab-custom');
  assert.ok(p.refused && !p.gotCredentials, p.output);
});

test('SIGHUP with a good configuration allowing an interface: reloaded, its return rules go first in the nat and backstop chains, and that is not drift', { skip }, async () => {
  const l = suite.lab();
  const a = await suite.agent();
  const from = reloadWith(a, 'allow: [extra0]\n');
  const reloaded = await a.waitFor('reloaded', (x) => x.event === 'reloaded', { from });
  assert.deepEqual(reloaded.allow, ['extra0'], JSON.stringify(reloaded));
  await a.waitFor('the pass after the reload', (x) => (x.event === 'repaired' || x.event === 'reconciled') && (x.reasons as string[]).includes('reload'), { from, timeoutMs: 5_000 });
  assert.match(rulesOf(await natSave(l), 'IMDS-GUARD')[0] ?? '', /^-A IMDS-GUARD -i extra0 .*-j RETURN$/);
  assert.match(rulesOf(await filterSave(l), 'IMDS-GUARD-FWD')[0] ?? '', /^-A IMDS-GUARD-FWD -i extra0 .*-j RETURN$/);
  assert.deepEqual(a.events('drift', from), []);
  assert.ok(a.alive());
  const p = await timedProbe(l, 'bridge');
  assert.ok(p.refused && !p.gotCredentials, p.output);
});

async function assertRefused(l: Lab, networks: readonly string[], what: string): Promise<void> {
  for (const n of networks) {
    const p = await timedProbe(l, n);
    assert.ok(p.refused && !p.gotCredentials, `${n} ${what}:\n${p.output}`);
  }
}

/** Nothing of ours in any table, every other line exactly as it was with the agent, and every line from before the agent still there. */
async function assertRemoved(l: Lab, withAgent: Saves): Promise<void> {
  const after = await saves(l);
  for (const family of ['ipv4', 'ipv6'] as const) {
    for (const table of ['nat', 'filter'] as const) {
      const now = after[family][table];
      assert.deepEqual(ownLines(now), [], `${family} ${table}: imds-guard lines remain`);
      // Docker's chains (FORWARD, DOCKER-USER, DOCKER-ISOLATION-*, its nat rules) byte for byte.
      assert.equal(now, withoutOwn(withAgent[family][table]), `${family} ${table}: a line that is not ours changed`);
      const missing = tablesBefore[family][table].split('\n').filter((line) => !now.split('\n').includes(line));
      assert.deepEqual(missing, [], `${family} ${table}: lines from before the agent are gone`);
    }
  }
}

test('SIGTERM: the agent exits 0 within a second and the rules stay; remove takes out all three chains and their jumps and nothing else; the boot script puts them back', { skip }, async (t) => {
  const l = suite.lab();
  const a = await suite.agent();
  const withAgent = await saves(l);
  for (const family of ['ipv4', 'ipv6'] as const) {
    assert.deepEqual(ownLines(withAgent[family].nat).filter((x) => x.startsWith(':')), [':IMDS-GUARD - [0:0]'], `${family}: no nat chain of ours`);
    assert.deepEqual(ownLines(withAgent[family].filter).filter((x) => x.startsWith(':')), [':IMDS-GUARD-FWD - [0:0]', ':IMDS-GUARD-OUT - [0:0]'], `${family}: no filter chains of ours`);
  }
  const bootScript = readFileSync(a.files.bootScript, 'utf8');

  const stopped = await a.stop('SIGTERM');
  t.diagnostic(`exited ${Math.round(stopped.ms)} ms after SIGTERM`);
  assert.equal(stopped.code, 0, a.tail());
  assert.ok(stopped.ms < 1000, `took ${Math.round(stopped.ms)} ms`);
  assert.equal(a.events('stopping').length, 1);
  assert.deepEqual(await saves(l), withAgent, 'a table changed when the agent stopped');
  await assertRefused(l, ['lab-custom', 'host'], 'was not refused with the agent stopped');

  const r = await a.cli('remove');
  assert.equal(r.code, 0, r.stderr);
  await assertRemoved(l, withAgent);
  assert.equal(existsSync(a.files.bootScript), false, 'the boot script is still there');
  for (const n of ['lab-custom', 'host']) {
    const open = await timedProbe(l, n);
    assert.ok(open.gotCredentials, `after remove ${n} should be as open as before the agent:\n${open.output}`);
  }

  // As at boot: the script the agent wrote, run in the lab host, restores every chain.
  const boot = await l.inHost('sh', ['-s'], { input: bootScript });
  assert.equal(boot.code, 0, `the boot script failed:\n${boot.stdout}${boot.stderr}`);
  const booted = await saves(l);
  for (const family of ['ipv4', 'ipv6'] as const) {
    assert.ok(preroutingFirst(booted[family].nat), `${family}: the boot script did not put the nat jump first`);
    assert.ok(rulesOf(booted[family].filter, 'IMDS-GUARD-OUT').some((x) => x.includes(`--path "${l.cgroupParent}"`) || x.includes(`--path ${l.cgroupParent} `)), `${family}: the boot script did not restore the parent rule:\n${rulesOf(booted[family].filter, 'IMDS-GUARD-OUT').join('\n')}`);
  }
  await assertRefused(l, ['lab-custom', 'host'], 'was not refused after the boot script ran');
  const again = await a.cli('remove');
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(ownLines((await saves(l)).ipv4.filter), [], 'remove after the boot script left filter lines');
});

const preroutingFirst = (nat: string): boolean => rulesOf(nat, 'PREROUTING')[0] === JUMP_LINE;
