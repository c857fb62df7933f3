import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type BareAgent, startBareAgent } from '../helpers/bare-agent.js';
import { type TestCgroup, createTestCgroup } from '../helpers/cgroup.js';
import { ensureBuilt, saveNatFilter, saveTable, tool } from '../helpers/cli.js';
import { WHOLE_TABLE_MAX_RULES } from '../../src/core/deciding-reads.js';
import { type Backend, type Family, type Netns, createNetns } from '../helpers/netns.js';

/**
 * Issue 15's correctness side: a converged agent reads only the deciding chains
 * (`iptables -S` of PREROUTING, our chains, FORWARD, OUTPUT, DOCKER-USER, raw PREROUTING),
 * so that read must never hide drift. The real agent (`dist/cli.js run --no-docker`) runs
 * in a throwaway namespace with a drift check every second; once its passes log
 * `reads: deciding`, each kind of thing the full read would catch is done to the tables,
 * and the next pass, woken by the drift check or the netfilter monitor (neither forces a
 * full read), must notice it: repair it (the repair itself escalates to a full read), or,
 * for what it may not repair (a NOTRACK bypass), report it. Then passes go back to cheap.
 * Both backends: under legacy no monitor wakes the agent, only the drift check. Under nft
 * the nat table holds 600 foreign rules, more than a cheap read lists whole, so both ways of
 * reading are covered: nat chain by chain there, every table whole under legacy.
 */
before(() => ensureBuilt());

const JUMP = ['-m', 'comment', '--comment', 'imds-guard: metadata endpoint protection'];
const EVERY_SECOND = '* * * * * *';
// Passes that may not force a full read: the tamper must be found by what a cheap pass reads.
const CHEAP_REASONS = new Set(['drift-check', 'netfilter-change']);

interface Tamper {
  readonly what: string;
  readonly family: Family;
  readonly table: 'nat' | 'filter' | 'raw';
  readonly args: readonly string[];
  /** Kinds the drift lines must include. */
  readonly kinds: readonly string[];
  /** Not ours to undo: reported (drift line), left in place, removed by the test afterwards. */
  readonly undo?: readonly string[];
  /** A foreign rule the repair leaves where it is (below our jump), removed by the test afterwards. */
  readonly cleanup?: readonly string[];
}

const ENDPOINT_RULE = ['-d', '169.254.169.254/32', '-p', 'tcp', '-m', 'tcp', '--dport', '80'];
const TAMPERS: readonly Tamper[] = [
  { what: 'the nat chain flushed', family: 'ipv4', table: 'nat', args: ['-F', 'IMDS-GUARD'], kinds: ['rule-missing'] },
  { what: 'the PREROUTING jump deleted', family: 'ipv4', table: 'nat', args: ['-D', 'PREROUTING', ...JUMP, '-j', 'IMDS-GUARD'], kinds: ['jump-missing'] },
  { what: 'a second PREROUTING jump', family: 'ipv4', table: 'nat', args: ['-A', 'PREROUTING', ...JUMP, '-j', 'IMDS-GUARD'], kinds: ['jump-duplicate'] },
  { what: 'an ACCEPT of the endpoint above the PREROUTING jump', family: 'ipv4', table: 'nat', args: ['-I', 'PREROUTING', '1', '-d', '169.254.169.254/32', '-j', 'ACCEPT'], kinds: ['jump-not-first'], cleanup: ['-D', 'PREROUTING', '-d', '169.254.169.254/32', '-j', 'ACCEPT'] },
  { what: 'a foreign rule in our nat chain', family: 'ipv4', table: 'nat', args: ['-I', 'IMDS-GUARD', '1', '-s', '10.9.9.9/32', '-j', 'RETURN'], kinds: ['rule-unknown'] },
  { what: 'our nat rule altered (ACCEPT, comment kept)', family: 'ipv4', table: 'nat', args: ['-R', 'IMDS-GUARD', '1', ...ENDPOINT_RULE, '-m', 'comment', '--comment', 'imds-guard:d8b25c267408', '-j', 'ACCEPT'], kinds: ['rule-altered'] },
  { what: 'the IPv6 nat chain flushed', family: 'ipv6', table: 'nat', args: ['-F', 'IMDS-GUARD'], kinds: ['rule-missing'] },
  { what: 'the FORWARD backstop chain flushed', family: 'ipv4', table: 'filter', args: ['-F', 'IMDS-GUARD-FWD'], kinds: ['rule-missing'] },
  { what: 'the FORWARD jump deleted', family: 'ipv4', table: 'filter', args: ['-D', 'FORWARD', ...JUMP, '-j', 'IMDS-GUARD-FWD'], kinds: ['jump-missing'] },
  { what: 'the host-network OUTPUT chain flushed', family: 'ipv4', table: 'filter', args: ['-F', 'IMDS-GUARD-OUT'], kinds: ['rule-missing'] },
  { what: 'the OUTPUT jump deleted (IPv6)', family: 'ipv6', table: 'filter', args: ['-D', 'OUTPUT', ...JUMP, '-j', 'IMDS-GUARD-OUT'], kinds: ['jump-missing'] },
  {
    what: 'a raw-table NOTRACK of the endpoint (skips NAT)',
    family: 'ipv4',
    table: 'raw',
    args: ['-A', 'PREROUTING', '-d', '169.254.169.254/32', '-p', 'tcp', '-j', 'CT', '--notrack'],
    kinds: ['bypass-notrack'],
    undo: ['-D', 'PREROUTING', '-d', '169.254.169.254/32', '-p', 'tcp', '-j', 'CT', '--notrack'],
  },
];

const lastPass = (agent: BareAgent): Record<string, unknown> | undefined => [...agent.logs].reverse().find((l) => l.event === 'reconciled' || l.event === 'repaired');

for (const backend of ['nft', 'legacy'] as const satisfies readonly Backend[]) {
  describe(`the converged agent's cheap read under ${backend} finds every kind of drift`, () => {
    let ns: Netns;
    let cgroup: TestCgroup;
    let agent: BareAgent;
    let protectedTables: Record<Family, string>;
    const tables = (): Record<Family, string> => ({ ipv4: saveNatFilter(ns, 'ipv4', backend), ipv6: saveNatFilter(ns, 'ipv6', backend) });
    const raw = (): string => saveTable(ns, 'ipv4', backend, 'raw');

    /** Waits for a converged pass that read only the deciding chains, logged at index `from` or later. */
    const cheapConverged = (from: number) =>
      agent.waitFor('a converged pass on the deciding chains', (l) => l.event === 'reconciled' && l.converged === true && l.reads === 'deciding', { from, timeoutMs: 15_000 });

    before(async () => {
      ns = createNetns(`cheap-read-${backend}`);
      if (backend === 'nft') {
        const dnat = Array.from({ length: WHOLE_TABLE_MAX_RULES + 100 }, (_, i) => `-A DOCKER -d 10.0.0.1/32 -p tcp -m tcp --dport ${20000 + i} -j DNAT --to-destination 172.17.0.2:80`);
        ns.restore('ipv4', backend, ['*nat', ':DOCKER - [0:0]', '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER', ...dnat, 'COMMIT', ''].join('\n'));
      }
      cgroup = createTestCgroup();
      agent = startBareAgent(ns, ['--backend', backend, '--drift-schedule', EVERY_SECOND, '--cgroup-parent', cgroup.path]);
      await agent.waitFor('the first install', (l) => l.event === 'installed');
      await cheapConverged(0);
      protectedTables = tables();
      assert.match(protectedTables.ipv4, /^-A IMDS-GUARD-OUT .*-m cgroup --path/m, 'the host-network chain is part of what is checked');
    });

    after(async () => {
      await agent?.stop();
      ns?.destroy();
      cgroup?.destroy();
    });

    for (const tamper of TAMPERS) {
      test(`${tamper.what}: noticed by the next cheap pass (${tamper.kinds.join(', ')}), ${tamper.undo === undefined ? 'repaired' : 'reported and left'}, then cheap again`, async () => {
        const from = agent.logs.length;
        assert.equal(lastPass(agent)?.reads, 'deciding', 'the passes before the tamper are cheap ones');
        ns.check(tool(tamper.family, backend), ['-t', tamper.table, ...tamper.args]);

        const drift = await agent.waitFor(`drift of kind ${tamper.kinds.join('/')}`, (l) => l.event === 'drift' && tamper.kinds.includes(String(l.kind)), { from, timeoutMs: 15_000 });
        assert.equal(drift.family, tamper.family, JSON.stringify(drift));
        // The pass that found it was woken by something that does not force a full read.
        const found = await agent.waitFor('the pass that found it, escalated to a full read', (l) => l.event === 'repaired' || (l.event === 'reconciled' && l.reads === 'full'), { from, timeoutMs: 5_000 });
        assert.ok((found.reasons as string[]).every((r) => CHEAP_REASONS.has(r)), `woken by ${JSON.stringify(found.reasons)}: it must be a pass that starts with the cheap read`);

        if (tamper.undo === undefined) {
          assert.equal(found.event, 'repaired', JSON.stringify(found));
          assert.equal(found.reads, 'full', 'a repair reads everything first');
          if (tamper.cleanup !== undefined) {
            ns.check(tool(tamper.family, backend), ['-t', tamper.table, ...tamper.cleanup]);
            await cheapConverged(agent.logs.length);
          } else await cheapConverged(agent.logs.indexOf(found) + 1);
          assert.deepEqual(tables(), protectedTables, 'the tables are back as they were');
        } else {
          // Not repairable by the agent: every pass now finds it (a failure keeps the reads full).
          assert.match(raw(), /--notrack/, 'the agent leaves a rule that is not its own');
          const first = agent.logs.indexOf(found);
          await agent.waitFor('the next pass, still a full read', (l) => (l.event === 'reconciled' || l.event === 'repaired') && l.reads === 'full', { from: first + 1, timeoutMs: 15_000 });
          ns.check(tool(tamper.family, backend), ['-t', tamper.table, ...tamper.undo]);
          await cheapConverged(agent.logs.length);
          assert.deepEqual(tables(), protectedTables);
        }
      });
    }
  });
}
