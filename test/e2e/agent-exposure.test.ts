import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LAB_IMAGE, agentSuite, auditJson, filterSave, mustDocker, natSave, rulesOf, timedProbe } from '../helpers/agent.js';
import type { Lab } from '../helpers/lab.js';

/**
 * What the audit says about exposure the host chose or cannot help: an allowed interface
 * keeps access (traffic) and, being a Docker bridge, is a FAIL (IG-602) naming the
 * network it exposes; a macvlan network, whose traffic never passes the host's
 * PREROUTING, is listed as not coverable (IG-603), WARN by default and FAIL with
 * --not-coverable fail, in text and JSON.
 */
const ALLOWED = { network: 'allowed-net', bridge: 'allowbr0' };
const MACVLAN = { network: 'mv-net', parent: 'mvp0', container: 'mv-c' };

async function labIp(l: Lab, args: readonly string[]): Promise<void> {
  const r = await l.inHost('ip', args);
  assert.equal(r.code, 0, `ip ${args.join(' ')}: ${r.stderr}`);
}

const suite = agentSuite('e2e-exposure', {
  startEarly: false,
  async prepare(lab) {
    await mustDocker(lab, ['network', 'create', '-o', `com.docker.network.bridge.name=${ALLOWED.bridge}`, ALLOWED.network]);
    // The macvlan parent: a veth made inside the lab host's namespace, never in this machine's.
    await labIp(lab, ['link', 'add', MACVLAN.parent, 'type', 'veth', 'peer', 'name', 'mvp1']);
    for (const dev of [MACVLAN.parent, 'mvp1']) await labIp(lab, ['link', 'set', dev, 'up']);
    await mustDocker(lab, ['network', 'create', '-d', 'macvlan', '-o', `parent=${MACVLAN.parent}`, '--subnet', '192.168.77.0/24', MACVLAN.network]);
    await mustDocker(lab, ['run', '-d', '--pull', 'never', '--network', MACVLAN.network, '--name', MACVLAN.container, LAB_IMAGE, 'sleep', '3600']);
    return {};
  },
});
const { skip } = suite;

test('control: without the agent, containers on the network to be allowed and on another read the credentials', { skip }, async () => {
  const l = suite.lab();
  for (const n of [ALLOWED.network, 'lab-user']) {
    const p = await timedProbe(l, n);
    assert.ok(p.gotCredentials, `${n} got no credentials without the agent:\n${p.output}`);
  }
});

test('a macvlan network with a container is listed as not coverable: WARN IG-603 by default, FAIL with --not-coverable fail (text and JSON)', { skip }, async () => {
  const a = await suite.agent();
  const warn = await auditJson(a);
  const view = warn.report.networks.find((n) => n.name === MACVLAN.network);
  assert.deepEqual(
    view && { driver: view.driver, coverage: view.coverage, parent: view.parent, containers: view.containers },
    { driver: 'macvlan', coverage: 'not-coverable', parent: MACVLAN.parent, containers: [MACVLAN.container] },
    JSON.stringify(warn.report.networks),
  );
  const finding = warn.report.findings.find((f) => f.id === 'IG-603');
  assert.equal(finding?.status, 'warn', JSON.stringify(finding));
  assert.equal(finding?.network, MACVLAN.network);
  assert.match(finding?.remediation ?? '', /bridge network/);
  assert.equal(warn.report.protected, true, JSON.stringify(warn.report.findings.filter((f) => f.status === 'fail')));
  assert.equal(warn.code, 0, warn.stderr);

  const text = await a.cli('audit');
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`^\\[WARN\\] IG-603 .*${MACVLAN.network}.*${MACVLAN.parent}`, 'm'), text.stdout);
  assert.match(text.stdout, new RegExp(`^\\s+${MACVLAN.network}\\s+macvlan\\s+not-coverable .*\\[${MACVLAN.container}\\]$`, 'm'), text.stdout);

  const fail = await auditJson(a, ['--not-coverable', 'fail']);
  assert.equal(fail.report.findings.find((f) => f.id === 'IG-603')?.status, 'fail');
  assert.equal(fail.report.protected, false);
  assert.equal(fail.code, 1, fail.stderr);
  const failText = await a.cli('audit', ['--not-coverable', 'fail']);
  assert.equal(failText.code, 1);
  assert.match(failText.stdout, /^verdict: NOT PROTECTED/m);
  assert.match(failText.stdout, new RegExp(`^\\[FAIL\\] IG-603 .*${MACVLAN.network}`, 'm'), failText.stdout);
});

test('--allow <a Docker bridge>: a container there keeps reading the metadata, others are refused, and the audit FAILs it as IG-602 naming the network', { skip }, async (t) => {
  const l = suite.lab();
  await suite.stopAgent({ extraArgs: ['--allow', ALLOWED.bridge] });
  const a = await suite.agent();
  for (const [save, chain] of [[await natSave(l), 'IMDS-GUARD'], [await filterSave(l), 'IMDS-GUARD-FWD']] as const) {
    assert.match(rulesOf(save, chain)[0] ?? '', new RegExp(`^-A ${chain} -i ${ALLOWED.bridge} .*-j RETURN$`), `${chain} does not let ${ALLOWED.bridge} through first`);
  }
  const kept = await timedProbe(l, ALLOWED.network);
  assert.ok(kept.gotCredentials, `${ALLOWED.network} lost access although ${ALLOWED.bridge} is allowed:\n${kept.output}`);
  const other = await timedProbe(l, 'lab-user');
  assert.ok(other.refused && !other.gotCredentials, `lab-user was not refused:\n${other.output}`);

  const { report, code } = await auditJson(a, ['--allow', ALLOWED.bridge]);
  const finding = report.findings.find((f) => f.id === 'IG-602');
  t.diagnostic(finding?.message ?? '(none)');
  assert.equal(finding?.status, 'fail', JSON.stringify(report.findings.filter((f) => f.status !== 'info')));
  assert.equal(finding?.kind, 'allowed-docker-bridge');
  assert.equal(finding?.network, ALLOWED.network);
  assert.equal(finding?.interface, ALLOWED.bridge);
  assert.deepEqual(report.allow, [ALLOWED.bridge]);
  assert.equal(report.networks.find((n) => n.name === ALLOWED.network)?.coverage, 'allowed');
  assert.equal(report.protected, false);
  assert.equal(code, 1);
  const text = await a.cli('audit', ['--allow', ALLOWED.bridge]);
  assert.match(text.stdout, new RegExp(`^\\[FAIL\\] IG-602 .*${ALLOWED.network}`, 'm'), text.stdout);
});
