import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type BareAgent, startBareAgent } from '../helpers/bare-agent.js';
import { CLI, JUMP_LINE, ensureBuilt } from '../helpers/cli.js';
import { type FirewalldLab, firewalldLab, until } from '../helpers/firewalld.js';
import { createNetns } from '../helpers/netns.js';

/**
 * On legacy iptables nothing reports a change as it happens: the built agent, with its
 * drift check once an hour, repairs a flushed chain when firewalld reloads (Debian's real
 * firewalld on a private bus in the agent's namespace, test/helpers/firewalld.ts), and
 * the repair's reason says it came from the Reloaded signal.
 */
const ns = createNetns('agent-firewalld');
let fw: FirewalldLab;
let agent: BareAgent;
const RULE = /^-A IMDS-GUARD -d 169\.254\.169\.254\/32 -p tcp -m tcp --dport 80 -m comment --comment "?imds-guard:[0-9a-f]{12}"? -j REDIRECT --to-ports 1$/m;
const legacyNat = (): string => ns.check('iptables-legacy-save', ['-t', 'nat']);
const protectedNow = (s = legacyNat()): boolean => RULE.test(s) && s.split('\n').find((l) => l.startsWith('-A PREROUTING')) === JUMP_LINE;

before(async () => {
  ensureBuilt();
  fw = firewalldLab(ns);
  await fw.startBus();
  await fw.startFirewalld();
  agent = startBareAgent(ns, ['--backend', 'legacy'], fw.env);
  await agent.waitFor('the legacy notice', (l) => l.event === 'netfilter-watch-unavailable');
  await agent.waitFor('the firewalld watcher', (l) => l.event === 'firewalld-watch-started');
  // The first pass logs 'installed' and then 'repaired': wait for the last, so the test's
  // own repair is not confused with it.
  await agent.waitFor('the first install', (l) => l.event === 'repaired' && (l.reasons as string[]).includes('start'));
  await until('protection in place', () => protectedNow());
});

after(async () => {
  await agent?.stop();
  await fw?.destroy();
  ns.destroy();
});

test('a flushed legacy chain is repaired when firewalld reloads, not an hour later', async () => {
  const from = agent.logs.length;
  ns.check('iptables-legacy', ['-t', 'nat', '-F', 'IMDS-GUARD']);
  assert.equal(protectedNow(), false);
  assert.equal(fw.cmd(['--reload']).trim(), 'success');
  const repaired = await agent.waitFor('a repair after the reload', (l) => l.event === 'repaired', { from });
  assert.deepEqual(repaired.reasons, ['firewalld-reloaded']);
  assert.ok(protectedNow(), legacyNat());
});

test("firewalld's own nftables table (inet firewalld, hooked at prerouting before dstnat) is read by the native audit and is no bypass", () => {
  assert.match(ns.check('nft', ['list', 'tables']), /^table inet firewalld$/m, 'firewalld runs with its nftables backend');
  const r = ns.run(process.execPath, [CLI, 'audit', '--format', 'json', '--no-docker', '--backend', 'legacy', '--boot-script', 'never']);
  const report = JSON.parse(r.stdout) as { findings: { id: string; kind: string }[] };
  assert.deepEqual(report.findings.filter((f) => f.id === 'IG-306'), [], r.stdout);
});
