import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { JUMP_LINE, ensureBuilt, failingKinds, fixture, freshHost, parseAudit, runCli } from '../helpers/cli.js';
import type { Backend } from '../helpers/netns.js';

before(() => ensureBuilt());

const PROTECTED_V4 = fixture('protected-default.ipv4.save');
const PROTECTED_V6 = fixture('protected-default.ipv6.save');
const COMMENT = ['-m', 'comment', '--comment', 'imds-guard: metadata endpoint protection'];

const CHAIN_REWRITE = `*nat
:IMDS-GUARD - [0:0]
-A IMDS-GUARD -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:1189f431dc7c -j REDIRECT --to-ports 1
-A IMDS-GUARD -d 169.254.169.254/32 -i docker_gwbridge -p tcp -m tcp --dport 80 -m comment --comment imds-guard:abec39a8c6fe -j REDIRECT --to-ports 1
-A IMDS-GUARD -d 169.254.169.254/32 -i br-+ -p tcp -m tcp --dport 80 -m comment --comment imds-guard:ba669814d24f -j REDIRECT --to-ports 1
COMMIT
`;

const JUMP_TO_TOP = `*nat
-D PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
-I PREROUTING 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
COMMIT
`;

/** The protected table with foreign PREROUTING rules after our jump (where a repair leaves them). */
const protectedWith = (...prerouting: string[]): string => PROTECTED_V4.replace(`${JUMP_LINE}\n`, [JUMP_LINE, ...prerouting, ''].join('\n'));

interface Tamper {
  readonly behaviour: string;
  readonly commands: readonly (readonly string[])[];
  /** Failing findings of `audit --format json`, as sorted "family kind". */
  readonly findings: readonly string[];
  /** The one IPv4 transaction the repairing apply runs. */
  readonly repair: string;
  /** The IPv4 nat table after the repair. */
  readonly after: string;
}

const unprotected = ['ipv4 unprotected', 'ipv4 unprotected', 'ipv4 unprotected'];

const TAMPERS: readonly Tamper[] = [
  {
    behaviour: 'a deleted rule is found as rule-missing and the chain is rewritten whole',
    commands: [['-D', 'IMDS-GUARD', '2']],
    findings: ['ipv4 rule-missing'],
    repair: CHAIN_REWRITE,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a flushed chain is found as three missing rules and rewritten whole',
    commands: [['-F', 'IMDS-GUARD']],
    findings: ['ipv4 rule-missing', 'ipv4 rule-missing', 'ipv4 rule-missing'],
    repair: CHAIN_REWRITE,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a deleted chain and jump are found and reinstalled in one transaction',
    commands: [['-D', 'PREROUTING', '1'], ['-F', 'IMDS-GUARD'], ['-X', 'IMDS-GUARD']],
    findings: ['ipv4 chain-missing', 'ipv4 jump-missing', 'ipv4 rule-missing', 'ipv4 rule-missing', 'ipv4 rule-missing'],
    repair: CHAIN_REWRITE.replace('COMMIT', '-I PREROUTING 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD\nCOMMIT'),
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a jump moved below a foreign ACCEPT of 169.254.0.0/16 is found as jump-not-first and foreign-undermining and moved back to the top',
    commands: [['-D', 'PREROUTING', '1'], ['-A', 'PREROUTING', '-d', '169.254.0.0/16', '-j', 'ACCEPT'], ['-A', 'PREROUTING', ...COMMENT, '-j', 'IMDS-GUARD']],
    findings: ['ipv4 foreign-undermining', 'ipv4 jump-not-first', ...unprotected],
    repair: JUMP_TO_TOP,
    after: protectedWith('-A PREROUTING -d 169.254.0.0/16 -j ACCEPT'),
  },
  {
    behaviour: 'an ACCEPT of the endpoint inserted above the jump is found as jump-not-first and foreign-undermining; the jump goes back on top and the ACCEPT stays',
    commands: [['-I', 'PREROUTING', '1', '-p', 'tcp', '-d', '169.254.169.254', '-j', 'ACCEPT']],
    findings: ['ipv4 foreign-undermining', 'ipv4 jump-not-first', ...unprotected],
    repair: JUMP_TO_TOP,
    after: protectedWith('-A PREROUTING -d 169.254.169.254/32 -p tcp -j ACCEPT'),
  },
  {
    behaviour: "a rule whose target was changed but kept its comment is found as rule-altered and rewritten",
    commands: [['-R', 'IMDS-GUARD', '1', '-d', '169.254.169.254/32', '-i', 'docker0', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-m', 'comment', '--comment', 'imds-guard:1189f431dc7c', '-j', 'RETURN']],
    findings: ['ipv4 rule-altered', 'ipv4 rule-missing'],
    repair: CHAIN_REWRITE,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a rule imds-guard did not write in its chain is found as rule-unknown and the chain is rewritten without it',
    commands: [['-I', 'IMDS-GUARD', '1', '-i', 'docker0', '-j', 'RETURN']],
    findings: ['ipv4 rule-unknown'],
    repair: CHAIN_REWRITE,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a duplicated jump is found as jump-duplicate and reduced to one',
    commands: [['-A', 'PREROUTING', ...COMMENT, '-j', 'IMDS-GUARD']],
    findings: ['ipv4 jump-duplicate'],
    repair: JUMP_TO_TOP.replace('-D', '-D PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD\n-D'),
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a jump narrowed to one interface is found as jump-altered and replaced by the canonical one',
    commands: [['-R', 'PREROUTING', '1', '-i', 'docker0', ...COMMENT, '-j', 'IMDS-GUARD']],
    findings: ['ipv4 jump-altered', ...unprotected],
    repair: JUMP_TO_TOP.replace('-D PREROUTING -m', '-D PREROUTING -i docker0 -m'),
    after: PROTECTED_V4,
  },
];

/**
 * A namespace protected exactly as `apply` leaves it (apply.test.ts proves that text),
 * and the CLI pointed at it; the boot script is left out so only the nat table is judged.
 */
function protectedHost(t: { after(fn: () => void): void }, backend: Backend) {
  const { ns, host } = freshHost(t, 'drift');
  ns.restore('ipv4', backend, PROTECTED_V4);
  ns.restore('ipv6', backend, PROTECTED_V6);
  const cli = (...args: string[]) => runCli(ns, host, [...args, '--backend', backend, '--boot-script', 'never', ...host.args]);
  return { ns, host, cli };
}

for (const backend of ['nft', 'legacy'] as const satisfies readonly Backend[]) {
  describe(`drift with --backend ${backend}`, () => {
    for (const tamper of TAMPERS) {
      test(`${tamper.behaviour}; audit exits 1, apply repairs with one restore`, (t) => {
        const { ns, host, cli } = protectedHost(t, backend);
        for (const c of tamper.commands) ns.nat('ipv4', backend, c);
        const tampered = ns.saveNat('ipv4', backend);

        const audit = cli('audit', '--format', 'json');
        assert.equal(audit.code, 1, audit.stderr);
        assert.deepEqual(failingKinds(parseAudit(audit)), [...tamper.findings].sort());
        assert.equal(ns.saveNat('ipv4', backend), tampered, 'audit must not change the table');

        const written = host.restores().length;
        const apply = cli('apply');
        assert.equal(apply.code, 0, apply.stderr);
        assert.deepEqual(host.restores().slice(written), [{ tool: `iptables-${backend}-restore`, payload: tamper.repair }]);
        assert.equal(ns.saveNat('ipv4', backend), tamper.after);
      });
    }

    test("Swarm's DOCKER-INGRESS jump and Docker's DOCKER jump above ours are not drift: audit exits 0 and apply writes nothing", (t) => {
      const { ns, host, cli } = protectedHost(t, backend);
      ns.nat('ipv4', backend, ['-N', 'DOCKER-INGRESS']);
      ns.nat('ipv4', backend, ['-N', 'DOCKER']);
      ns.nat('ipv4', backend, ['-I', 'PREROUTING', '1', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER']);
      ns.nat('ipv4', backend, ['-I', 'PREROUTING', '1', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER-INGRESS']);
      const table = ns.saveNat('ipv4', backend);

      const audit = cli('audit', '--format', 'json');
      assert.equal(audit.code, 0, audit.stdout);
      const jump = parseAudit(audit).findings.find((f) => f.id === 'IG-201' && f.family === 'ipv4');
      assert.equal(jump?.kind, 'protected');
      const written = host.restores().length;
      const apply = cli('apply');
      assert.equal(apply.code, 0);
      assert.match(apply.stdout, /already protected; nothing written/);
      assert.equal(host.restores().length, written);
      assert.equal(ns.saveNat('ipv4', backend), table);
    });
  });
}

// The seed recipe's hand-made block, as typed and as iptables-save prints it.
const SEED_ARGS = ['-d', '169.254.169.254/32', '-i', 'docker0', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', '1.1.1.1'];
const SEED = `-A PREROUTING ${SEED_ARGS.join(' ')}`;

test("the seed recipe's hand-made DNAT below the jump is a warning whose remediation command deletes exactly it", (t) => {
  const { ns, host, cli } = protectedHost(t, 'nft');
  ns.nat('ipv4', 'nft', ['-A', 'PREROUTING', ...SEED_ARGS]);

  const audit = cli('audit', '--format', 'json');
  assert.equal(audit.code, 0, 'a warning is not drift');
  const seed = parseAudit(audit).findings.filter((f) => f.kind === 'seed-duplicate');
  assert.equal(seed.length, 1);
  assert.equal(seed[0]!.status, 'warn');
  assert.equal(seed[0]!.remediation, 'iptables -t nat -D PREROUTING -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 1.1.1.1');

  const written = host.restores().length;
  assert.equal(cli('apply').code, 0);
  assert.equal(host.restores().length, written, 'apply never deletes a rule that is not ours');
  ns.check('sh', ['-c', seed[0]!.remediation!]);
  assert.equal(ns.saveNat('ipv4', 'nft'), PROTECTED_V4);
});

test("the seed recipe's DNAT inserted above the jump sends traffic off the host: jump-not-first, and apply puts the jump above it", (t) => {
  const { ns, cli } = protectedHost(t, 'nft');
  ns.nat('ipv4', 'nft', ['-I', 'PREROUTING', '1', ...SEED_ARGS]);

  const audit = cli('audit', '--format', 'json');
  assert.equal(audit.code, 1);
  assert.deepEqual(failingKinds(parseAudit(audit)), ['ipv4 jump-not-first', ...unprotected]);
  assert.equal(cli('apply').code, 0);
  assert.equal(ns.saveNat('ipv4', 'nft'), protectedWith(SEED));
});
