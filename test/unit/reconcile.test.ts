import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Logger } from 'pino';
import type { Ports } from '../../src/app/ports.js';
import { reconcile } from '../../src/app/reconcile.js';
import { type Config, resolveConfig } from '../../src/core/config.js';
import type { Backend, Family } from '../../src/core/family.js';
import { CommandError } from '../../src/errors.js';
import type { ConntrackPort } from '../../src/shell/conntrack.js';
import type { FilesPort } from '../../src/shell/files.js';
import type { IpsetPort } from '../../src/shell/ipset.js';
import type { IptablesPort } from '../../src/shell/iptables.js';

const EMPTY_SAVE = '*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n';

/** What the fakes saw, in order. */
interface Recorder {
  readonly calls: string[];
  readonly warnings: string[];
}

/**
 * A recording IptablesPort over an empty nft nat table (legacy not loaded). `onRestore`
 * decides what each restore does: return to accept it, throw to reject it.
 */
function fakePorts(onRestore: (n: number, family: Family, backend: Backend) => void): { ports: Ports; rec: Recorder } {
  const rec: Recorder = { calls: [], warnings: [] };
  let restores = 0;
  const iptables: IptablesPort = {
    async save(family, backend) {
      rec.calls.push(`save ${family} ${backend}`);
      return EMPTY_SAVE;
    },
    async restore(family, backend) {
      rec.calls.push(`restore ${family} ${backend}`);
      onRestore(++restores, family, backend);
    },
    async legacyNatLoaded() {
      return false;
    },
  };
  const files: FilesPort = {
    read: async () => null,
    exists: async () => false,
    writeAtomic: async (path) => void rec.calls.push(`write ${path}`),
    remove: async (path) => void rec.calls.push(`remove ${path}`),
    ensureSymlink: async (_target, link) => void rec.calls.push(`link ${link}`),
  };
  const conntrack: ConntrackPort = {
    flush: async (e) => {
      rec.calls.push(`conntrack ${e.address}`);
      return { deleted: 0 };
    },
  };
  const log = { info() {}, debug() {}, error() {}, warn: (_o: unknown, msg: string) => void rec.warnings.push(msg) } as unknown as Logger;
  const ipset: IpsetPort = { save: async () => ({ available: false, why: 'test' }), restore: async () => {}, destroy: async () => false };
  return { ports: { iptables, ipset, files, conntrack, docker: null, log }, rec };
}

/** The calls with each run of saves shown as one "observe": the order of saves inside a pass is not behaviour. */
const trace = (calls: readonly string[]): string[] => calls.map((c) => (c.startsWith('save ') ? 'observe' : c)).filter((c, i, all) => c !== 'observe' || all[i - 1] !== 'observe');

const config: Config = resolveConfig([{ source: 'test', values: { backend: 'nft', bootScript: 'always', bootScriptDir: '/tmp/igt-never-written', docker: false } }]);
const rejected = () => {
  throw new CommandError('iptables-nft-restore rejected the transaction, nothing was applied: line 3 failed', 'restore-failed', 'iptables-nft-restore');
};

describe('reconcile with a fake iptables', () => {
  test('a transaction rejected every time is tried 3 times, each after a fresh save, then thrown as restore-failed (exit 3); nothing else is written', async () => {
    const { ports, rec } = fakePorts(rejected);
    await assert.rejects(reconcile(config, ports), (e: unknown) => {
      assert.ok(e instanceof CommandError);
      assert.equal(e.code, 'restore-failed');
      assert.equal(e.exitCode, 3);
      return true;
    });
    assert.deepEqual(trace(rec.calls), ['observe', 'restore ipv4 nft', 'observe', 'restore ipv4 nft', 'observe', 'restore ipv4 nft']);
    assert.deepEqual(rec.warnings, ['the nat table changed under the transaction; observing again', 'the nat table changed under the transaction; observing again']);
  });

  test('a transaction rejected once (the table changed under it) succeeds on the next pass, then the connections are cut and the boot script written', async () => {
    const { ports, rec } = fakePorts((n) => {
      if (n === 1) rejected();
    });
    const r = await reconcile(config, ports);
    assert.equal(r.repaired, true);
    assert.equal(r.restores, 2);
    assert.deepEqual(trace(rec.calls), [
      'observe', 'restore ipv4 nft',
      'observe', 'restore ipv4 nft', 'restore ipv6 nft',
      'conntrack 169.254.169.254', 'conntrack fd00:ec2::254',
      'write /tmp/igt-never-written/imds-guard.start',
    ]);
  });

  test('a held xtables lock is not retried: it is thrown at once as lock-held', async () => {
    const { ports, rec } = fakePorts(() => {
      throw new CommandError('iptables-legacy-restore: the xtables lock was held by another process for 1s; nothing was applied', 'lock-held', 'iptables-legacy-restore');
    });
    await assert.rejects(reconcile(config, ports), (e: unknown) => e instanceof CommandError && e.code === 'lock-held' && e.exitCode === 3);
    assert.equal(rec.calls.filter((c) => c.startsWith('restore')).length, 1);
  });

  test('report mode observes and plans but never restores or writes', async () => {
    const { ports, rec } = fakePorts(() => assert.fail('no restore in report mode'));
    const r = await reconcile({ ...config, mode: 'report' }, ports);
    assert.equal(r.repaired, false);
    assert.deepEqual(trace(rec.calls), ['observe']);
    assert.ok(r.findings.some((f) => f.kind === 'jump-missing' && f.status === 'fail'));
  });
});

describe('reconcile when the set form is refused', () => {
  function setPorts(reject: (payload: string) => void): { ports: Ports; rec: Recorder; payloads: string[] } {
    const rec: Recorder = { calls: [], warnings: [] };
    const payloads: string[] = [];
    const iptables: IptablesPort = {
      save: async () => EMPTY_SAVE,
      async restore(family, _backend, payload) {
        payloads.push(payload);
        rec.calls.push(`restore ${family}`);
        reject(payload);
      },
      legacyNatLoaded: async () => false,
    };
    const ipset: IpsetPort = { save: async () => ({ available: true, text: null }), restore: async () => void rec.calls.push('ipset restore'), destroy: async () => false };
    const docker = { listBridges: async () => ({ bridges: [{ id: 'x', name: 'mynet', iface: 'mynet0' }], rejected: [] }), watchNetworks: async () => () => {} };
    const log = { info() {}, debug() {}, error() {}, warn: (_o: unknown, msg: string) => void rec.warnings.push(msg) } as unknown as Logger;
    return { ports: { ...fakePorts(() => {}).ports, iptables, ipset, docker, log }, rec, payloads };
  }

  test('a set-form transaction that fails for another reason (the table changed under it) is retried as it is, never given up', async () => {
    const { ports, rec } = setPorts(rejected);
    await assert.rejects(reconcile({ ...config, docker: true, bootScript: 'never' }, ports), (e: unknown) => e instanceof CommandError && e.code === 'restore-failed');
    assert.deepEqual(rec.warnings, ['the nat table changed under the transaction; observing again', 'the nat table changed under the transaction; observing again']);
  });

  test('a kernel that refuses the set rule every time gets rules of its own for the custom bridge on the last attempt; nothing is left unprotected', async () => {
    const { ports, rec, payloads } = setPorts((payload) => {
      if (payload.includes('--match-set')) throw new CommandError("iptables-nft-restore rejected the transaction, nothing was applied: Couldn't load match `set'", 'restore-failed', 'iptables-nft-restore');
    });
    const r = await reconcile({ ...config, docker: true, bootScript: 'never' }, ports);
    assert.equal(r.repaired, true);
    assert.equal(r.setRefused, true, 'the agent is told, so it stops asking');
    assert.deepEqual(rec.warnings, ['the nat table changed under the transaction; observing again', 'the set form was refused twice; covering custom-named bridges with rules of their own in this pass']);
    const last = payloads.filter((p) => p.includes('mynet0') || p.includes('--match-set')).at(-1)!;
    assert.match(last, / -i mynet0 /);
    assert.doesNotMatch(last, /--match-set/);
  });
});
