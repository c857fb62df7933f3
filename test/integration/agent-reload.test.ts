import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { type Agent, bareAgentHost, startAgent } from '../helpers/agent.js';
import { ensureBuilt } from '../helpers/cli.js';
import type { Netns } from '../helpers/netns.js';

/**
 * SIGHUP cannot end the agent: the built agent (`node dist/cli.js run`, Docker off in
 * its config file) in a throwaway namespace gets configurations that check-config used
 * to accept and the agent then died on, and one that is valid but cannot be started
 * with. Each time it must stay up, on its old configuration, and keep repairing.
 */
before(() => ensureBuilt());

const GOOD = 'docker: false\ndriftSchedule: "*/1 * * * * *"\n';

function reloadWith(a: Agent, file: string, yaml: string): number {
  writeFileSync(file, yaml);
  const from = a.mark();
  a.signal('SIGHUP');
  return from;
}

/** Flushes our chain in whichever backend the agent chose; the agent must put it back. */
function flushOurChain(ns: Netns): void {
  for (const tool of ['iptables-nft', 'iptables-legacy']) {
    if (ns.run(`${tool}-save`, ['-t', 'nat']).stdout.includes(':IMDS-GUARD')) {
      ns.check(tool, ['-t', 'nat', '-F', 'IMDS-GUARD']);
      return;
    }
  }
  throw new Error('no IMDS-GUARD chain in either backend');
}

test('SIGHUP with a schedule the cron package refuses, a Docker host that is not a URL, or a Docker client that cannot be built: the agent stays up on its old configuration and keeps repairing', async (t) => {
  const { ns, host, root, configFile } = bareAgentHost(t, 'agent-reload', GOOD);
  // TLS on, certificates missing: a tcp:// Docker host then fails when its client is built (reading ca.pem), not in validation.
  const a = await startAgent(host, { root, configFile, driftSchedule: null, env: { DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: join(root, 'no-certs') } });
  t.after(async () => void (await a.stop().catch(() => {})));

  let from = reloadWith(a, configFile, 'docker: false\ndriftSchedule: "61 * * * * *"\n');
  let line = await a.waitFor('reload-rejected (cron)', (l) => l.event === 'reload-rejected', { from });
  assert.match(String(line.err), /driftSchedule "61 \* \* \* \* \*" is not a cron expression: Field value \(61\) is out of range/);

  from = reloadWith(a, configFile, 'docker: true\ndockerHost: "tcp://["\n');
  line = await a.waitFor('reload-rejected (docker host)', (l) => l.event === 'reload-rejected', { from });
  assert.match(String(line.err), /dockerHost "tcp:\/\/\[" is not a URL/);

  from = reloadWith(a, configFile, 'docker: true\ndockerHost: "tcp://127.0.0.1:2376"\ndriftSchedule: "*/1 * * * * *"\n');
  line = await a.waitFor('reload-failed', (l) => l.event === 'reload-failed', { from });
  assert.match(String(line.err), /ca\.pem/);
  assert.deepEqual(a.events('reloaded'), [], 'a refused configuration was reloaded');
  assert.ok(a.alive(), 'the agent exited');

  // Still on the old state: it still repairs (woken by the netfilter monitor or the every-second drift check).
  const tamper = a.mark();
  flushOurChain(ns);
  await a.waitFor('the repair', (l) => l.event === 'repaired' && (l.kinds as string[]).includes('rule-missing') && (l.reasons as string[]).some((r) => r === 'drift-check' || r === 'netfilter-change'), { from: tamper, timeoutMs: 5_000 });

  // A good configuration is still taken, and a burst of SIGHUPs folds into at most two reloads.
  from = reloadWith(a, configFile, `${GOOD}allow: [extra0]\n`);
  for (let i = 0; i < 4; i++) a.signal('SIGHUP');
  await a.waitFor('reloaded', (l) => l.event === 'reloaded' && (l.allow as string[]).includes('extra0'), { from });
  // The new configuration is in force: its first pass writes extra0's exception into the chain.
  await a.waitFor('a pass with extra0', (l) => l.event === 'repaired' && (l.reasons as string[]).includes('reload'), { from, timeoutMs: 5_000 });
  assert.match(ns.check('iptables-nft-save', ['-t', 'nat']), /-A IMDS-GUARD -i extra0 .*-j RETURN/);
  await new Promise((r) => setTimeout(r, 500));
  const reloads = a.events('reloaded', from).length;
  assert.ok(reloads >= 1 && reloads <= 2, `${reloads} reloads for 5 SIGHUPs sent at once`);

  const stopped = await a.stop('SIGTERM');
  assert.equal(stopped.code, 0, a.tail());
});
