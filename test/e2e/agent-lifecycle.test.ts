import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { type Agent, agentSuite, coveredThroughSet, mustDocker, natSave, timedProbe } from '../helpers/agent.js';
import { JUMP_LINE } from '../helpers/cli.js';

/**
 * The agent's life around Docker and signals: dockerd restarting under it, SIGHUP with
 * a bad and a good configuration, SIGTERM, and `remove` afterwards.
 */
let configFile = '';
/** The lab host's nat tables before the agent first ran. */
let natBefore = { ipv4: '', ipv6: '' };

const suite = agentSuite('e2eagent-life', {
  async prepare(lab) {
    natBefore = { ipv4: await natSave(lab, 'ipv4'), ipv6: await natSave(lab, 'ipv6') };
    configFile = join(lab.dir, 'config.yaml');
    writeFileSync(configFile, 'interfaces: [docker0, docker_gwbridge, "br-+"]\n');
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
      const [s, custom] = await Promise.all([natSave(l), coveredThroughSet(l, 'labcustom0')]);
      samples.push({ at: Date.now(), ok: s.includes(JUMP_LINE) && custom });
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
  await mustDocker(l, ['network', 'create', '-o', 'com.docker.network.bridge.name=lifelate0', 'life-late']);
  t.after(async () => void (await l.docker(['network', 'rm', 'life-late'])));
  await a.waitFor('covered lifelate0', (x) => x.event === 'covered' && x.interface === 'lifelate0', { from: late });
  assert.ok(await coveredThroughSet(l, 'lifelate0'), 'lifelate0 is not a member of the set');
  const p = await timedProbe(l, 'life-late');
  assert.ok(p.refused && !p.gotCredentials, p.output);
  assert.deepEqual(a.events('drift', from), [], 'the restart was reported as drift');
});

test('SIGHUP with a bad configuration file: reload-rejected, the agent keeps running on the old one and still repairs', { skip }, async () => {
  const l = suite.lab();
  const a = await suite.agent();
  const from = reloadWith(a, 'interfaces: [docker0, "not a name"]\n');
  const rejected = await a.waitFor('reload-rejected', (x) => x.event === 'reload-rejected', { from });
  assert.match(String(rejected.err), /interfaces/, JSON.stringify(rejected));
  assert.ok(a.alive(), 'the agent exited');
  assert.deepEqual(a.events('reloaded', from), []);
  // Still enforcing: a flushed chain comes back at the next drift check.
  const r = await l.inHost('iptables', ['-t', 'nat', '-F', 'IMDS-GUARD']);
  assert.equal(r.code, 0, r.stderr);
  await a.waitFor('the repair', (x) => x.event === 'repaired' && (x.kinds as string[]).includes('rule-missing'), { from, timeoutMs: 5_000 });
  assert.ok(await coveredThroughSet(l, 'labcustom0'), 'labcustom0 is not covered through the set');
});

test('SIGHUP with a good configuration adding an interface: reloaded, and its rule appears as coverage, not drift', { skip }, async () => {
  const l = suite.lab();
  const a = await suite.agent();
  const from = reloadWith(a, 'interfaces: [docker0, docker_gwbridge, "br-+", extra0]\n');
  const reloaded = await a.waitFor('reloaded', (x) => x.event === 'reloaded', { from });
  assert.ok((reloaded.interfaces as string[]).includes('extra0'), JSON.stringify(reloaded));
  await a.waitFor('covered extra0', (x) => x.event === 'covered' && x.interface === 'extra0', { from, timeoutMs: 5_000 });
  assert.match(await natSave(l), /^-A IMDS-GUARD -d 169\.254\.169\.254\/32 -i extra0 .* -j REDIRECT --to-ports 1$/m);
  assert.deepEqual(a.events('drift', from), []);
  assert.ok(a.alive());
});

const ours = (save: string): string[] => save.split('\n').filter((line) => /IMDS-GUARD|imds-guard/.test(line));
const without = (save: string, drop: readonly string[]): string => save.split('\n').filter((line) => !drop.includes(line)).join('\n');

test('SIGTERM: the agent exits 0 within a second and the rules stay; remove then leaves the nat table as Docker has it', { skip }, async (t) => {
  const l = suite.lab();
  const a = await suite.agent();
  const withAgent = { ipv4: await natSave(l, 'ipv4'), ipv6: await natSave(l, 'ipv6') };
  assert.ok(ours(withAgent.ipv4).length > 0 && ours(withAgent.ipv6).length > 0, 'nothing of ours to keep');

  const stopped = await a.stop('SIGTERM');
  t.diagnostic(`exited ${Math.round(stopped.ms)} ms after SIGTERM`);
  assert.equal(stopped.code, 0, a.tail());
  assert.ok(stopped.ms < 1000, `took ${Math.round(stopped.ms)} ms`);
  assert.equal(a.events('stopping').length, 1);
  assert.equal(await natSave(l, 'ipv4'), withAgent.ipv4, 'the IPv4 nat table changed when the agent stopped');
  assert.equal(await natSave(l, 'ipv6'), withAgent.ipv6, 'the IPv6 nat table changed when the agent stopped');
  const stillBlocked = await timedProbe(l, 'lab-custom');
  assert.ok(stillBlocked.refused && !stillBlocked.gotCredentials, stillBlocked.output);

  const r = await a.cli('remove');
  assert.equal(r.code, 0, r.stderr);
  for (const family of ['ipv4', 'ipv6'] as const) {
    const after = await natSave(l, family);
    assert.deepEqual(ours(after), [], `${family}: imds-guard lines remain`);
    // Everything else is byte for byte what it was with the agent, and Docker's rules from before the agent are all there.
    assert.equal(after, without(withAgent[family], ours(withAgent[family])));
    const missing = natBefore[family].split('\n').filter((line) => !after.split('\n').includes(line));
    assert.deepEqual(missing, [], `${family}: lines from before the agent are gone`);
  }
  assert.equal(existsSync(a.files.bootScript), false, 'the boot script is still there');
  const open = await timedProbe(l, 'lab-custom');
  assert.ok(open.gotCredentials, `after remove the endpoint should be as open as before the agent:\n${open.output}`);
});
