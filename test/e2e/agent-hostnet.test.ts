import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { type Agent, CRED_MARKER, CRED_REQUEST, LAB_IMAGE, MD_ADDR, agentSuite, auditJson, filterSave, mustDocker, rulesOf, timedExec, timedProbe } from '../helpers/agent.js';
import { cgroup2Mount } from '../helpers/cgroup.js';
import type { Lab, ProbeResult } from '../helpers/lab.js';

/**
 * Issue 12 against the lab's dockerd, whose containers land in real cgroups under the
 * lab's parent (/imdsg-<name>, passed to the agent as --cgroup-parent): host-network
 * containers read the fake metadata before the agent and are refused with it (started
 * before or after it, or joining one with --network container:), a process of the host
 * outside Docker's cgroups keeps its access, a labelled container is exempt, a container
 * outside the parent gets a rule of its own (the window until then is recorded), and a
 * parent cgroup removed and made again by hand is seen as stale and replaced in one pass.
 */
const mount = cgroup2Mount();
const EARLY = 'hostnet-early';
const EXEMPT = 'hostnet-exempt';
const OWN = 'hostnet-own';
const suite = agentSuite('e2e-hostagent', {
  startEarly: false,
  async prepare(lab) {
    // Started before the agent: its later sockets are made in the parent's subtree all the same.
    await mustDocker(lab, ['run', '-d', '--pull', 'never', '--network', 'host', '--name', EARLY, LAB_IMAGE, 'sleep', '3600']);
    return {};
  },
});
// In CI the capability is there: a missing one is a failure, not a skip.
const skip = suite.skip !== false ? suite.skip : mount === null && process.env.CI !== 'true' ? 'no cgroup2 hierarchy' : false;

const open = (p: { gotCredentials: boolean; output: string }, what: string): void => assert.ok(p.gotCredentials, `${what} got no credentials:\n${p.output}`);
function refused(p: { gotCredentials: boolean; refused: boolean; output: string }, what: string): void {
  assert.equal(p.gotCredentials, false, `${what} read the credentials:\n${p.output}`);
  assert.ok(p.refused, `${what} was not refused (a reset reads "Connection refused"):\n${p.output}`);
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function idOf(l: Lab, name: string): Promise<string> {
  return mustDocker(l, ['inspect', '-f', '{{.Id}}', name]);
}

/** The filter OUTPUT chain's rules that name `needle` (a container id or cgroup path), both families. */
async function outRulesNaming(l: Lab, needle: string): Promise<string[]> {
  const [v4, v6] = await Promise.all([filterSave(l, 'ipv4'), filterSave(l, 'ipv6')]);
  return [...rulesOf(v4, 'IMDS-GUARD-OUT'), ...rulesOf(v6, 'IMDS-GUARD-OUT')].filter((r) => r.includes(needle));
}

async function waitUntil(what: string, ok: () => Promise<boolean>, timeoutMs = 10_000): Promise<number> {
  const t0 = performance.now();
  while (!(await ok())) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`${what} not within ${timeoutMs} ms`);
    await sleep(20);
  }
  return performance.now() - t0;
}

/**
 * A plain process of the lab host (static busybox, not a container) asking for the
 * credentials from inside cgroup `dir`: it writes its own pid to cgroup.procs before it
 * execs, so its socket is made there. Null dir: it stays in our cgroup.
 */
async function probeFromCgroup(l: Lab, dir: string): Promise<ProbeResult> {
  const t0 = performance.now();
  const probe = `printf '${CRED_REQUEST}' | /bin/busybox nc -w 3 ${MD_ADDR} 80 2>&1`;
  const r = await l.inHost('sh', ['-c', 'echo $$ > "$0/cgroup.procs" || exit 125; exec /bin/busybox sh -c "$1"', dir, probe]);
  const output = r.stdout + r.stderr;
  assert.notEqual(r.code, 125, `could not join ${dir}: ${output}`);
  return { gotCredentials: output.includes(CRED_MARKER), refused: /Connection refused/.test(output), ms: performance.now() - t0, output };
}

test('control: without the agent, host-network containers (running, new, joining), one outside the parent and a host process all read the fake credentials', { skip }, async () => {
  const l = suite.lab();
  open(await l.probeHost(), 'a new --network host container');
  open(await timedExec(l, EARLY), `docker exec in ${EARLY}`);
  open(await l.probeJoin(EARLY), `a --network container:${EARLY} container`);
  open(await timedProbe(l, 'host', { runArgs: ['--cgroup-parent', `${l.cgroupParent}.ctl`] }), 'a host-network container outside the parent');
  open(await l.probeHostProcess(), 'a host process outside Docker');
});

test('with the agent: host-network containers started before and after it, and one joining with --network container:, are refused at once; a host process still reads', { skip }, async (t) => {
  const l = suite.lab();
  const a = await suite.agent();
  const after = await timedProbe(l, 'host');
  t.diagnostic(`new host-network container: refused ${after.innerMs} ms into its attempt`);
  refused(after, 'a host-network container started after the agent');
  assert.ok(after.innerMs < 500, `the refusal took ${after.innerMs} ms`);
  const early = await timedExec(l, EARLY);
  refused(early, `docker exec in ${EARLY}, started before the agent`);
  assert.ok(early.innerMs < 500, `the refusal took ${early.innerMs} ms`);
  const joiner = await timedProbe(l, `container:${EARLY}`);
  refused(joiner, `a --network container:${EARLY} container`);
  refused(await l.probeJoin(EARLY), `scripts/lab probe-join ${EARLY}`);
  open(await l.probeHostProcess(), 'a host process outside Docker, with the agent');

  const { report } = await auditJson(a);
  const early4 = report.hostContainers.find((c) => c.name === EARLY);
  assert.equal(early4?.coverage, 'parent-rule', JSON.stringify(report.hostContainers));
  assert.equal(report.protected, true, JSON.stringify(report.findings.filter((f) => f.status === 'fail')));
});

test('a host-network container outside the parent gets a rule of its own at start (window recorded), and loses it when it stops', { skip }, async (t) => {
  const l = suite.lab();
  const a = await suite.agent();
  // Every 20 ms: the host's uptime (/proc/uptime is not namespaced) and the outcome.
  const loop = `while true; do read u _ </proc/uptime; r=$(printf '${CRED_REQUEST}' | nc -w 1 ${MD_ADDR} 80 2>&1 | grep -o -e ${CRED_MARKER} -e 'Connection refused' | head -n 1); echo "$u \${r:-other}"; sleep 0.02; done`;
  const from = a.mark();
  const t0 = performance.now();
  await mustDocker(l, ['run', '-d', '--pull', 'never', '--network', 'host', '--cgroup-parent', `${l.cgroupParent}.own`, '--name', OWN, LAB_IMAGE, 'sh', '-c', loop]);
  const started = performance.now() - t0;
  const id = await idOf(l, OWN);
  const ruleMs = await waitUntil(`a rule of ${OWN}'s own`, async () => (await outRulesNaming(l, id)).length >= 2);
  const rules = await outRulesNaming(l, id);
  assert.ok(rules.every((r) => r.includes(`${l.cgroupParent}.own/${id}`) && /cgino=\d+/.test(r)), rules.join('\n'));
  const applied = await a.waitFor('the filter write adding it', (x) => x.msg === 'applied transaction' && x.table === 'filter', { from });
  // Its attempts, once refused for sure.
  await sleep(300);
  const attempts = (await l.docker(['logs', OWN])).stdout.trim().split('\n').map((line) => {
    const [uptime = '', ...outcome] = line.split(' ');
    return { at: Number(uptime), outcome: outcome.join(' ') };
  });
  const firstRefused = attempts.findIndex((x) => x.outcome === 'Connection refused');
  const outcomes = attempts.map((x) => x.outcome);
  const reads = outcomes.slice(0, firstRefused < 0 ? undefined : firstRefused).filter((r) => r === CRED_MARKER).length;
  const span = firstRefused > 0 ? Math.round((attempts[firstRefused]!.at - attempts[0]!.at) * 1000) : 0;
  t.diagnostic(
    `${OWN} (cgroup ${l.cgroupParent}.own/${id.slice(0, 12)}): docker run -d returned in ${Math.round(started)} ms; its own rule seen in iptables-save ${Math.round(started + ruleMs)} ms after the run was called; ` +
      `agent's filter write at ${String(applied.time)}; the container read the credentials ${reads} time(s) in its first ${span} ms before the first refusal`,
  );
  assert.ok(firstRefused >= 0, `${OWN} was never refused:\n${outcomes.slice(-5).join('\n')}`);
  assert.deepEqual(outcomes.slice(firstRefused).filter((r) => r === CRED_MARKER), [], `${OWN} read the credentials after its rule was in`);
  refused(await timedExec(l, OWN), `docker exec in ${OWN}`);
  const { report } = await auditJson(a);
  assert.equal(report.hostContainers.find((c) => c.name === OWN)?.coverage, 'own-rule', JSON.stringify(report.hostContainers));

  await mustDocker(l, ['rm', '-f', OWN]);
  await waitUntil(`${OWN}'s rules removed`, async () => (await outRulesNaming(l, id)).length === 0);
});

test('a host-network container labelled imds-guard.allow=true reads the metadata, and the audit shows it exempt (IG-801); others stay refused', { skip }, async () => {
  const l = suite.lab();
  const a = await suite.agent();
  await mustDocker(l, ['run', '-d', '--pull', 'never', '--network', 'host', '--label', 'imds-guard.allow=true', '--name', EXEMPT, LAB_IMAGE, 'sleep', '3600']);
  const id = await idOf(l, EXEMPT);
  // Until its return rule is in, the parent rule refuses it too: closed, never open by mistake.
  await waitUntil(`${EXEMPT}'s return rule`, async () => (await outRulesNaming(l, id)).some((r) => r.endsWith('-j RETURN')));
  open(await timedExec(l, EXEMPT), `docker exec in ${EXEMPT}`);
  refused(await timedExec(l, EARLY), `docker exec in ${EARLY}`);
  refused(await timedProbe(l, 'host'), 'a new host-network container');
  const { report } = await auditJson(a);
  assert.equal(report.hostContainers.find((c) => c.name === EXEMPT)?.coverage, 'exempt', JSON.stringify(report.hostContainers));
  const finding = report.findings.find((f) => f.id === 'IG-801' && f.container === EXEMPT);
  assert.ok(finding !== undefined && /exempt/.test(finding.message), JSON.stringify(report.findings.filter((f) => f.id === 'IG-801')));
  const text = await a.cli('audit');
  assert.match(text.stdout, new RegExp(`^\\s+${EXEMPT}\\s+exempt\\s`, 'm'), text.stdout);
  await mustDocker(l, ['rm', '-f', EXEMPT]);
});

/** Waits until the agent's passes stop: nothing logged for `quietMs`. */
async function settled(a: Agent, quietMs = 1_500): Promise<void> {
  let seen = a.mark();
  let since = performance.now();
  for (let i = 0; i < 200; i++) {
    await sleep(100);
    if (a.mark() !== seen) {
      seen = a.mark();
      since = performance.now();
    } else if (performance.now() - since >= quietMs) return;
  }
}

test('the parent cgroup removed and made again by hand: the stale rule lets a process in it through, the agent sees cgroup-stale and replaces the rule in one pass, then it is refused again', { skip }, async (t) => {
  const l = suite.lab();
  // No drift check of its own in this test: the pass that repairs is the one SIGHUP asks for.
  await suite.stopAgent({ driftSchedule: '0 0 0 1 1 *' });
  const ids = (await mustDocker(l, ['ps', '-aq'])).split('\n').filter((x) => x !== '');
  if (ids.length > 0) await mustDocker(l, ['rm', '-f', ...ids]);
  const a = await suite.agent();
  await settled(a);
  const dir = join(mount!, l.cgroupParent);
  const children = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  assert.deepEqual(children, [], `the parent ${dir} still has cgroups in it`);
  const oldInode = statSync(dir).ino;
  assert.equal((await outRulesNaming(l, `cgino=${oldInode}`)).length, 2, 'the parent rule does not carry the parent\'s inode');

  rmdirSync(dir);
  mkdirSync(dir);
  const newInode = statSync(dir).ino;
  assert.notEqual(newInode, oldInode);
  const probeDir = join(dir, 'e2e-probe');
  mkdirSync(probeDir);
  t.after(() => {
    if (existsSync(probeDir)) rmdirSync(probeDir);
  });
  // The kernel resolved the rule's path to the cgroup that is gone: it matches nothing now.
  const hole = await probeFromCgroup(l, probeDir);
  assert.ok(hole.gotCredentials, `a process in the re-created parent was refused by the stale rule, so the test shows nothing:\n${hole.output}`);
  const audit = await auditJson(a);
  const stale = audit.report.findings.filter((f) => f.kind === 'cgroup-stale');
  assert.ok(stale.length > 0 && stale.every((f) => f.id === 'IG-108' && f.status === 'fail'), JSON.stringify(audit.report.findings.filter((f) => f.status === 'fail')));
  assert.notEqual(audit.code, 0, 'audit exited 0 with a stale rule');

  const from = a.mark();
  a.signal('SIGHUP');
  const pass = await a.waitFor('the first pass after SIGHUP', (x) => x.event === 'repaired' || x.event === 'reconciled' || x.event === 'reconcile-failed', { from });
  assert.equal(pass.event, 'repaired', JSON.stringify(pass));
  assert.ok((pass.kinds as string[]).includes('cgroup-stale'), JSON.stringify(pass));
  const drift = a.events('drift', from).filter((x) => x.kind === 'cgroup-stale');
  assert.ok(drift.length > 0, 'no cgroup-stale drift event');
  assert.equal((await outRulesNaming(l, `cgino=${newInode}`)).length, 2, 'the rule was not replaced by one for the new cgroup');
  refused(await probeFromCgroup(l, probeDir), 'a process in the re-created parent, after the repair');
  rmdirSync(probeDir);
  refused(await timedProbe(l, 'host'), 'a new host-network container, after the repair');
  open(await l.probeHostProcess(), 'a host process outside Docker');
});
