import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { renderBootScript } from '../../src/core/boot-script.js';
import { type Config, resolveConfig } from '../../src/core/config.js';
import { desiredFamily } from '../../src/core/desired.js';
import { parseIpsetSave } from '../../src/core/ipset.js';
import { type NatTable, parseNatTable } from '../../src/core/nat-table.js';
import { type Observation, type Transaction, isConverged, planReconcile, setWorthReading } from '../../src/core/plan.js';
import { joinArgs } from '../../src/core/rule.js';

const BUILT_INS = [':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]'];
const JUMP = '-A PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD';
const EMPTY = parseNatTable(['*nat', ...BUILT_INS, 'COMMIT', ''].join('\n'));

const config = (values: Record<string, unknown> = {}): Config => resolveConfig([{ source: 'test', values: { bootScript: 'never', ...values } }]);

/** A nat table protected for exactly `interfaces`, as imds-guard would have left it. */
function protectedFor(c: Config, family: 'ipv4' | 'ipv6', interfaces: readonly string[]): NatTable {
  const rules = desiredFamily(c, family, interfaces).rules.map((r) => `-A IMDS-GUARD ${joinArgs(r.args)}`);
  return parseNatTable(['*nat', ...BUILT_INS, ':IMDS-GUARD - [0:0]', JUMP, ...rules, 'COMMIT', ''].join('\n'));
}

const shown = (t: Transaction): string => (t.tool === 'iptables' ? `iptables ${t.family}` : `ipset ${t.families.join(',')}`);

const NO_IPSET: Observation['sets'] = { ipv4: { available: false }, ipv6: { available: false } };

function observation(over: Partial<Observation> & Pick<Observation, 'tables'>): Observation {
  return {
    backend: { backend: 'nft', reason: 'test' },
    dockerBridges: [],
    bootScript: { dirExists: false, file: null },
    localServiceEnabled: null,
    sets: NO_IPSET,
    ...over,
  };
}

describe('planReconcile', () => {
  test('with Docker unreachable, a custom bridge already in our chain stays protected (fail closed)', () => {
    const c = config();
    const covered = ['docker0', 'docker_gwbridge', 'br-+', 'mynet0'];
    const tables = { ipv4: { ours: protectedFor(c, 'ipv4', covered), other: null }, ipv6: { ours: protectedFor(c, 'ipv6', covered), other: null } };

    const unreachable = planReconcile(c, observation({ tables, dockerBridges: null }));
    assert.deepEqual(unreachable.interfaces, covered);
    assert.deepEqual(unreachable.transactions, []);
    assert.equal(isConverged(unreachable), true);

    // Docker answering without that network is what lets the rule go.
    const gone = planReconcile(c, observation({ tables, dockerBridges: ['docker0'] }));
    assert.deepEqual(gone.interfaces, ['docker0', 'docker_gwbridge', 'br-+']);
    assert.deepEqual(gone.transactions.map((t) => (t.tool === 'iptables' ? `${t.family} ${t.backend} ${t.protects}` : 'ipset')), ['ipv4 nft true', 'ipv6 nft true']);
    assert.doesNotMatch(gone.transactions[0]!.payload, /mynet0/);
  });

  test('a Docker bridge with a custom name that br-+ does not match gets its own rule', () => {
    const c = config({ endpoints: ['169.254.169.254'] });
    const plan = planReconcile(c, observation({ tables: { ipv4: { ours: EMPTY, other: null }, ipv6: { ours: EMPTY, other: null } }, dockerBridges: ['docker0', 'br-0123456789ab', 'mynet0'] }));
    assert.deepEqual(plan.interfaces, ['docker0', 'docker_gwbridge', 'br-+', 'mynet0']);
    assert.deepEqual(plan.transactions, [{
      tool: 'iptables',
      family: 'ipv4',
      backend: 'nft',
      protects: true,
      payload: `*nat
:IMDS-GUARD - [0:0]
-A IMDS-GUARD -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:1189f431dc7c -j REDIRECT --to-ports 1
-A IMDS-GUARD -d 169.254.169.254/32 -i docker_gwbridge -p tcp -m tcp --dport 80 -m comment --comment imds-guard:abec39a8c6fe -j REDIRECT --to-ports 1
-A IMDS-GUARD -d 169.254.169.254/32 -i br-+ -p tcp -m tcp --dport 80 -m comment --comment imds-guard:ba669814d24f -j REDIRECT --to-ports 1
-A IMDS-GUARD -d 169.254.169.254/32 -i mynet0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:${desiredFamily(c, 'ipv4', ['mynet0']).rules[0]!.id} -j REDIRECT --to-ports 1
-I PREROUTING 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
COMMIT
`,
    }]);
  });

  test('our rules left in the other backend are an other-backend finding and get a removal transaction there', () => {
    const c = config({ endpoints: ['169.254.169.254'] });
    const interfaces = ['docker0', 'docker_gwbridge', 'br-+'];
    const plan = planReconcile(c, observation({ tables: { ipv4: { ours: protectedFor(c, 'ipv4', interfaces), other: protectedFor(c, 'ipv4', interfaces) }, ipv6: { ours: EMPTY, other: null } } }));
    const leftover = plan.findings.filter((f) => f.kind === 'other-backend');
    assert.deepEqual(leftover.map((f) => ({ status: f.status, family: f.family, backend: f.backend, evidence: f.evidence })), [
      { status: 'fail', family: 'ipv4', backend: 'legacy', evidence: [JUMP] },
    ]);
    assert.deepEqual(plan.transactions, [{
      tool: 'iptables',
      family: 'ipv4',
      backend: 'legacy',
      protects: false,
      payload: `*nat
-D PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
:IMDS-GUARD - [0:0]
-X IMDS-GUARD
COMMIT
`,
    }]);
  });

  test('a family with our rules but no configured endpoint gets only a removal', () => {
    const all = config();
    const v4only = config({ endpoints: ['169.254.169.254'] });
    const interfaces = ['docker0', 'docker_gwbridge', 'br-+'];
    const plan = planReconcile(v4only, observation({ tables: { ipv4: { ours: protectedFor(v4only, 'ipv4', interfaces), other: null }, ipv6: { ours: protectedFor(all, 'ipv6', interfaces), other: null } } }));
    assert.deepEqual(plan.transactions.map((t) => `${shown(t)} ${t.protects}`), ['iptables ipv6 false']);
    assert.match(plan.transactions[0]!.payload, /^\*nat\n-D PREROUTING .*\n:IMDS-GUARD - \[0:0\]\n-X IMDS-GUARD\nCOMMIT\n$/);
  });

  test('an unavailable IPv6 nat table is reported as info and skipped', () => {
    const c = config();
    const plan = planReconcile(c, observation({ tables: { ipv4: { ours: EMPTY, other: null }, ipv6: { ours: null, other: null } } }));
    assert.deepEqual(plan.transactions.map(shown), ['iptables ipv4']);
    const f = plan.findings.find((x) => x.kind === 'family-unavailable');
    assert.equal(f?.status, 'info');
    assert.equal(f?.family, 'ipv6');
  });
});

describe('planReconcile and the boot script', () => {
  const tables = { ipv4: { ours: EMPTY, other: null }, ipv6: { ours: EMPTY, other: null } };

  test('auto on a host without the local.d directory writes no script and says why', () => {
    const plan = planReconcile(config({ bootScript: 'auto' }), observation({ tables }));
    assert.equal(plan.bootScript, null);
    assert.deepEqual(plan.findings.filter((f) => f.id === 'IG-401').map((f) => `${f.status} ${f.message}`), ['info /etc/local.d does not exist (not an OpenRC host): no boot script written']);
  });

  test('auto with the directory present and no script plans to write it (boot-script-missing)', () => {
    const plan = planReconcile(config({ bootScript: 'auto' }), observation({ tables, bootScript: { dirExists: true, file: null } }));
    assert.equal(plan.bootScript?.state, 'missing');
    assert.equal(plan.bootScript?.write, true);
    assert.ok(plan.findings.some((f) => f.kind === 'boot-script-missing' && f.status === 'fail'));
  });

  test('a current script, executable, is not rewritten', () => {
    const c = config({ bootScript: 'always' });
    const interfaces = ['docker0', 'docker_gwbridge', 'br-+'];
    const expected = renderBootScript('nft', [desiredFamily(c, 'ipv4', interfaces), desiredFamily(c, 'ipv6', interfaces)]);
    const converged = { ipv4: { ours: protectedFor(c, 'ipv4', interfaces), other: null }, ipv6: { ours: protectedFor(c, 'ipv6', interfaces), other: null } };
    const plan = planReconcile(c, observation({ tables: converged, bootScript: { dirExists: true, file: { content: expected, mode: 0o755 } } }));
    assert.equal(plan.bootScript?.write, false);
    assert.equal(isConverged(plan), true);
  });

  test("OpenRC's local service missing from the default runlevel is a warning, and a repair only when enabled in the config", () => {
    const warn = planReconcile(config({ bootScript: 'always' }), observation({ tables, localServiceEnabled: false }));
    assert.equal(warn.enableLocalService, false);
    assert.equal(warn.findings.find((f) => f.kind === 'local-service-disabled')?.status, 'warn');
    const fix = planReconcile(config({ bootScript: 'always', enableLocalService: true }), observation({ tables, localServiceEnabled: false }));
    assert.equal(fix.enableLocalService, true);
    assert.equal(fix.findings.find((f) => f.kind === 'local-service-disabled')?.status, 'fail');
  });
});

describe('planReconcile with ipset', () => {
  const c = config({ endpoints: ['169.254.169.254'] });
  const v4set = (members: readonly string[]): Observation['sets'] => ({
    ipv4: { available: true, set: parseIpsetSave(`create imds-guard-4 hash:net,iface family inet hashsize 1024\n${members.map((m) => `add imds-guard-4 0.0.0.0/0,${m}\n`).join('')}`).get('imds-guard-4')! },
    ipv6: { available: true, set: null },
  });
  /** Our chain as imds-guard leaves it on a host with ipset. */
  const withSetRule = (): NatTable => {
    const want = desiredFamily(c, 'ipv4', ['docker0', 'docker_gwbridge', 'br-+'], []);
    return parseNatTable(['*nat', ...BUILT_INS, ':IMDS-GUARD - [0:0]', JUMP, ...want.rules.map((r) => `-A IMDS-GUARD ${joinArgs(r.args)}`), 'COMMIT', ''].join('\n'));
  };

  test('first install: the set is created before the nat transaction whose set rule names it', () => {
    const plan = planReconcile(c, observation({ tables: { ipv4: { ours: EMPTY, other: null }, ipv6: { ours: EMPTY, other: null } }, dockerBridges: ['docker0', 'mynet0'], sets: { ipv4: { available: true, set: null }, ipv6: { available: true, set: null } } }));
    assert.deepEqual(plan.transactions.map(shown), ['ipset ipv4', 'iptables ipv4']);
    assert.equal(plan.transactions[0]!.payload, 'create imds-guard-4 hash:net,iface family inet\nadd imds-guard-4 0.0.0.0/0,mynet0\n');
    const nat = plan.transactions[1]!.payload;
    assert.doesNotMatch(nat, /mynet0/);
    assert.match(nat, /^-A IMDS-GUARD -d 169\.254\.169\.254\/32 -p tcp -m tcp --dport 80 -m set --match-set imds-guard-4 src,src -m comment --comment imds-guard:[0-9a-f]{12} -j REDIRECT --to-ports 1$/m);
  });

  test('the set is read only when a custom-named bridge could be in it or a rule of ours names it', () => {
    assert.equal(setWorthReading(c, 'ipv4', EMPTY, ['docker0', 'br-0123456789ab']), false, "Docker's own names need no set");
    assert.equal(setWorthReading(c, 'ipv4', EMPTY, ['docker0', 'mynet0']), true);
    assert.equal(setWorthReading(c, 'ipv4', EMPTY, null), false);
    assert.equal(setWorthReading(c, 'ipv4', withSetRule(), null), true, 'with Docker down, the members of a set in use are kept');
    assert.equal(setWorthReading(c, 'ipv4', withSetRule(), ['docker0']), true, 'the last custom bridge gone: the set rule and the set must go');
    assert.equal(setWorthReading(config({ ipset: 'never' }), 'ipv4', EMPTY, ['mynet0']), false);
  });

  test('both families change their sets in one ipset restore, before either nat transaction', () => {
    const both = config();
    const plan = planReconcile(both, observation({ tables: { ipv4: { ours: EMPTY, other: null }, ipv6: { ours: EMPTY, other: null } }, dockerBridges: ['mynet0'], sets: { ipv4: { available: true, set: null }, ipv6: { available: true, set: null } } }));
    assert.deepEqual(plan.transactions.map(shown), ['ipset ipv4,ipv6', 'iptables ipv4', 'iptables ipv6']);
    assert.equal(plan.transactions[0]!.payload, 'create imds-guard-4 hash:net,iface family inet\nadd imds-guard-4 0.0.0.0/0,mynet0\ncreate imds-guard-6 hash:net,iface family inet6\nadd imds-guard-6 ::/0,mynet0\n');
  });

  test('a new custom-named network is one ipset update and no nat transaction', () => {
    const plan = planReconcile(c, observation({ tables: { ipv4: { ours: withSetRule(), other: null }, ipv6: { ours: EMPTY, other: null } }, dockerBridges: ['mynet0', 'newnet'], sets: v4set(['mynet0']) }));
    assert.deepEqual(plan.transactions.map(shown), ['ipset ipv4']);
    assert.equal(plan.transactions[0]!.payload, 'add imds-guard-4 0.0.0.0/0,newnet\n');
    assert.deepEqual(plan.findings.filter((f) => f.status === 'fail').map((f) => `${f.kind} ${f.interface}`), ['set-member-missing newnet']);
    const verdict = plan.findings.find((f) => f.kind === 'protected' && f.interface === 'mynet0');
    assert.deepEqual(verdict?.evidence.slice(1), ['add imds-guard-4 0.0.0.0/0,mynet0']);
  });

  test('a converged host with set members writes nothing', () => {
    const plan = planReconcile(c, observation({ tables: { ipv4: { ours: withSetRule(), other: null }, ipv6: { ours: EMPTY, other: null } }, dockerBridges: ['mynet0'], sets: v4set(['mynet0']) }));
    assert.deepEqual(plan.transactions, []);
    assert.equal(isConverged(plan), true);
  });

  test('with Docker unreachable, the members already in the set stay (fail closed)', () => {
    const plan = planReconcile(c, observation({ tables: { ipv4: { ours: withSetRule(), other: null }, ipv6: { ours: EMPTY, other: null } }, dockerBridges: null, sets: v4set(['mynet0']) }));
    assert.ok(plan.interfaces.includes('mynet0'));
    assert.deepEqual(plan.transactions, []);
  });

  test('ipset: never moves the members back into rules, and destroys the set once no rule names it', () => {
    const never = config({ endpoints: ['169.254.169.254'], ipset: 'never' });
    const plan = planReconcile(never, observation({ tables: { ipv4: { ours: withSetRule(), other: null }, ipv6: { ours: EMPTY, other: null } }, dockerBridges: ['mynet0'], sets: v4set(['mynet0']) }));
    assert.deepEqual(plan.transactions.map(shown), ['iptables ipv4', 'ipset ipv4']);
    assert.match(plan.transactions[0]!.payload, /-i mynet0 /);
    assert.doesNotMatch(plan.transactions[0]!.payload, /match-set/);
    assert.equal(plan.transactions[1]!.payload, 'destroy imds-guard-4\n');
  });

  test('a host without custom-named bridges has no set: the last one removed takes the set rules out, then destroys the set', () => {
    const plan = planReconcile(c, observation({ tables: { ipv4: { ours: withSetRule(), other: null }, ipv6: { ours: EMPTY, other: null } }, dockerBridges: ['docker0'], sets: v4set(['mynet0']) }));
    assert.deepEqual(plan.transactions.map(shown), ['iptables ipv4', 'ipset ipv4']);
    assert.doesNotMatch(plan.transactions[0]!.payload, /match-set/);
    assert.equal(plan.transactions[1]!.payload, 'destroy imds-guard-4\n');
  });

  test('the boot script creates the set when the host has ipset, and falls back to a rule per interface', () => {
    const boot = config({ endpoints: ['169.254.169.254'], bootScript: 'always' });
    const plan = planReconcile(boot, observation({ tables: { ipv4: { ours: EMPTY, other: null }, ipv6: { ours: EMPTY, other: null } }, dockerBridges: ['mynet0'], sets: { ipv4: { available: true, set: null }, ipv6: { available: true, set: null } } }));
    const script = plan.bootScript!.expected;
    assert.match(script, /if command -v ipset >\/dev\/null 2>&1 && ipset -exist restore <<'IMDS_GUARD_SET'\ncreate imds-guard-4 hash:net,iface family inet\nadd imds-guard-4 0\.0\.0\.0\/0,mynet0\nIMDS_GUARD_SET\n/);
    assert.match(script, /--match-set imds-guard-4 src,src/);
    assert.match(script, /-A IMDS-GUARD -d 169\.254\.169\.254\/32 -i mynet0 /);
  });
});
