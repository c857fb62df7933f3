import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { FRESH_FILTER, FWD_JUMP_LINE, JUMP_LINE, type TableName, ensureBuilt, failingKinds, fixture, freshHost, ipt, parseAudit, runCli, saveNatFilter, saveTable } from '../helpers/cli.js';
import { type Backend, FRESH_NAT, type Netns } from '../helpers/netns.js';

before(() => ensureBuilt());

const PROTECTED_V4 = fixture('protected-default.ipv4.save');
const PROTECTED_V6 = fixture('protected-default.ipv6.save');
const COMMENT = ['-m', 'comment', '--comment', 'imds-guard: metadata endpoint protection'];
const JUMP = '-m comment --comment "imds-guard: metadata endpoint protection"';

const NAT_RULE = '-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:d8b25c267408 -j REDIRECT --to-ports 1';
const FWD_RULE = '-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:525867e4855d -j REJECT --reject-with tcp-reset';

const NAT_REWRITE = `*nat\n:IMDS-GUARD - [0:0]\n-A IMDS-GUARD ${NAT_RULE}\nCOMMIT\n`;
const FWD_REWRITE = `*filter\n:IMDS-GUARD-FWD - [0:0]\n-A IMDS-GUARD-FWD ${FWD_RULE}\nCOMMIT\n`;
const NAT_JUMP_INSERT = `*nat\n-I PREROUTING 1 ${JUMP} -j IMDS-GUARD\nCOMMIT\n`;
const FWD_JUMP_INSERT = `*filter\n-I FORWARD 1 ${JUMP} -j IMDS-GUARD-FWD\nCOMMIT\n`;
const NAT_JUMP_TO_TOP = `*nat\n-D PREROUTING ${JUMP} -j IMDS-GUARD\n-I PREROUTING 1 ${JUMP} -j IMDS-GUARD\nCOMMIT\n`;
const FWD_JUMP_TO_TOP = `*filter\n-D FORWARD ${JUMP} -j IMDS-GUARD-FWD\n-I FORWARD 1 ${JUMP} -j IMDS-GUARD-FWD\nCOMMIT\n`;

/** The protected IPv4 tables with foreign rules right after one of our jumps (where a repair leaves them). */
const protectedWith = (jump: string, ...after: string[]): string => PROTECTED_V4.replace(`${jump}\n`, [jump, ...after, ''].join('\n'));

interface Tamper {
  readonly behaviour: string;
  readonly table: TableName;
  readonly commands: readonly (readonly string[])[];
  /** Failing findings of `audit --format json`, as sorted "family table/chain kind". */
  readonly findings: readonly string[];
  /** The one IPv4 transaction the repairing apply runs. */
  readonly repair: string;
  /** The IPv4 nat and filter tables after the repair. */
  readonly after: string;
}

const NAT = 'ipv4 nat/IMDS-GUARD';
const FWD = 'ipv4 filter/IMDS-GUARD-FWD';

const TAMPERS: readonly Tamper[] = [
  {
    behaviour: 'a flushed nat chain is found as rule-missing and rewritten whole',
    table: 'nat',
    commands: [['-F', 'IMDS-GUARD']],
    findings: [`${NAT} rule-missing`],
    repair: NAT_REWRITE,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a deleted PREROUTING jump is found as jump-missing (the rule is there but unreached) and inserted on top again',
    table: 'nat',
    commands: [['-D', 'PREROUTING', '1']],
    findings: [`${NAT} jump-missing`, `${NAT} unprotected`],
    repair: NAT_JUMP_INSERT,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a deleted chain and jump are found and reinstalled in one transaction',
    table: 'nat',
    commands: [['-D', 'PREROUTING', '1'], ['-F', 'IMDS-GUARD'], ['-X', 'IMDS-GUARD']],
    findings: [`${NAT} chain-missing`, `${NAT} jump-missing`, `${NAT} rule-missing`],
    repair: NAT_REWRITE.replace('COMMIT', `-I PREROUTING 1 ${JUMP} -j IMDS-GUARD\nCOMMIT`),
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a nat rule whose target was changed but kept its comment is found as rule-altered and rewritten',
    table: 'nat',
    commands: [['-R', 'IMDS-GUARD', '1', '-d', '169.254.169.254/32', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-m', 'comment', '--comment', 'imds-guard:d8b25c267408', '-j', 'RETURN']],
    findings: [`${NAT} rule-altered`, `${NAT} rule-missing`],
    repair: NAT_REWRITE,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'an ACCEPT of the endpoint inserted above the PREROUTING jump is found as jump-not-first and foreign-undermining; the jump goes back on top and the ACCEPT stays',
    table: 'nat',
    commands: [['-I', 'PREROUTING', '1', '-p', 'tcp', '-d', '169.254.169.254', '-j', 'ACCEPT']],
    findings: [`${NAT} foreign-undermining`, `${NAT} jump-not-first`, `${NAT} unprotected`],
    repair: NAT_JUMP_TO_TOP,
    after: protectedWith(JUMP_LINE, '-A PREROUTING -d 169.254.169.254/32 -p tcp -j ACCEPT'),
  },
  {
    behaviour: 'a rule imds-guard did not write in its nat chain is found as rule-unknown and the chain is rewritten without it',
    table: 'nat',
    commands: [['-I', 'IMDS-GUARD', '1', '-i', 'docker0', '-j', 'RETURN']],
    findings: [`${NAT} rule-unknown`],
    repair: NAT_REWRITE,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a duplicated PREROUTING jump is found as jump-duplicate and reduced to one',
    table: 'nat',
    commands: [['-A', 'PREROUTING', ...COMMENT, '-j', 'IMDS-GUARD']],
    findings: [`${NAT} jump-duplicate`],
    repair: NAT_JUMP_TO_TOP.replace('-D', `-D PREROUTING ${JUMP} -j IMDS-GUARD\n-D`),
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a PREROUTING jump narrowed to one interface is found as jump-altered and replaced by the canonical one',
    table: 'nat',
    commands: [['-R', 'PREROUTING', '1', '-i', 'docker0', ...COMMENT, '-j', 'IMDS-GUARD']],
    findings: [`${NAT} jump-altered`, `${NAT} unprotected`],
    repair: NAT_JUMP_TO_TOP.replace('-D PREROUTING -m', '-D PREROUTING -i docker0 -m'),
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a flushed FORWARD backstop chain is found as rule-missing and rewritten whole',
    table: 'filter',
    commands: [['-F', 'IMDS-GUARD-FWD']],
    findings: [`${FWD} rule-missing`],
    repair: FWD_REWRITE,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a deleted FORWARD jump is found as jump-missing and inserted on top again',
    table: 'filter',
    commands: [['-D', 'FORWARD', '1']],
    findings: [`${FWD} jump-missing`, `${FWD} unprotected`],
    repair: FWD_JUMP_INSERT,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'a backstop rule turned into an ACCEPT that kept its comment is found as rule-altered and rewritten',
    table: 'filter',
    commands: [['-R', 'IMDS-GUARD-FWD', '1', '-d', '169.254.169.254/32', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-m', 'comment', '--comment', 'imds-guard:525867e4855d', '-j', 'ACCEPT']],
    findings: [`${FWD} rule-altered`, `${FWD} rule-missing`],
    repair: FWD_REWRITE,
    after: PROTECTED_V4,
  },
  {
    behaviour: 'an ACCEPT of the endpoint inserted above the FORWARD jump is found as jump-not-first and foreign-undermining; the jump goes back on top and the ACCEPT stays',
    table: 'filter',
    commands: [['-I', 'FORWARD', '1', '-d', '169.254.169.254', '-j', 'ACCEPT']],
    findings: [`${FWD} foreign-undermining`, `${FWD} jump-not-first`, `${FWD} unprotected`],
    repair: FWD_JUMP_TO_TOP,
    after: protectedWith(FWD_JUMP_LINE, '-A FORWARD -d 169.254.169.254/32 -j ACCEPT'),
  },
];

/**
 * A namespace protected exactly as `apply` leaves it (apply.test.ts proves that text),
 * and the CLI pointed at it; the boot script is left out so only the tables are judged.
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
        for (const c of tamper.commands) ipt(ns, 'ipv4', backend, tamper.table, c);
        const tampered = saveNatFilter(ns, 'ipv4', backend);

        const audit = cli('audit', '--format', 'json');
        assert.equal(audit.code, 1, audit.stderr);
        assert.deepEqual(failingKinds(parseAudit(audit)), [...tamper.findings].sort());
        assert.equal(saveNatFilter(ns, 'ipv4', backend), tampered, 'audit must not change the tables');

        const written = host.restores().length;
        const apply = cli('apply');
        assert.equal(apply.code, 0, apply.stdout + apply.stderr);
        assert.match(apply.stdout, /^imds-guard: protected \(1 transaction\(s\)\)$/m);
        assert.deepEqual(host.restores().slice(written), [{ tool: `iptables-${backend}-restore`, payload: tamper.repair }]);
        assert.equal(saveNatFilter(ns, 'ipv4', backend), tamper.after);
        assert.equal(saveNatFilter(ns, 'ipv6', backend), PROTECTED_V6, 'the other family is not touched');
        assert.equal(cli('audit').code, 0, 'repaired means protected');
      });
    }

    test("Swarm's DOCKER-INGRESS and Docker's DOCKER jumps above ours in PREROUTING, DOCKER-USER and DOCKER-INGRESS above ours in FORWARD: the DOCKER-USER Docker made gets our jump at its top (and nothing else is written), then Docker's bridge rules put above our FORWARD jump are not drift: audit exits 0 and apply writes nothing", (t) => {
      const { ns, host, cli } = protectedHost(t, backend);
      const nat = (...a: string[]) => ipt(ns, 'ipv4', backend, 'nat', a);
      const filter = (...a: string[]) => ipt(ns, 'ipv4', backend, 'filter', a);
      nat('-N', 'DOCKER-INGRESS');
      nat('-A', 'DOCKER-INGRESS', '-p', 'tcp', '-m', 'tcp', '--dport', '8000', '-j', 'DNAT', '--to-destination', '172.18.0.2:8000');
      nat('-A', 'DOCKER-INGRESS', '-j', 'RETURN');
      nat('-N', 'DOCKER');
      nat('-I', 'PREROUTING', '1', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER');
      nat('-I', 'PREROUTING', '1', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER-INGRESS');
      filter('-N', 'DOCKER-USER');
      filter('-A', 'DOCKER-USER', '-j', 'RETURN');
      filter('-N', 'DOCKER-INGRESS');
      filter('-A', 'DOCKER-INGRESS', '-p', 'tcp', '-m', 'tcp', '--dport', '8000', '-j', 'ACCEPT');
      filter('-A', 'DOCKER-INGRESS', '-j', 'RETURN');
      filter('-I', 'FORWARD', '1', '-j', 'DOCKER-INGRESS');
      filter('-I', 'FORWARD', '1', '-j', 'DOCKER-USER');
      const docker = saveNatFilter(ns, 'ipv4', backend);

      // DOCKER-USER as Docker makes it: our jump is not there yet; the FORWARD jump sees everything first anyway.
      const before = cli('audit', '--format', 'json');
      assert.equal(before.code, 1, before.stdout);
      assert.deepEqual(failingKinds(parseAudit(before)), [`${FWD} jump-missing`]);
      const missing = parseAudit(before).findings.find((f) => f.kind === 'jump-missing')!;
      assert.deepEqual({ message: missing.message, severity: missing.severity, evidence: missing.evidence }, { message: 'DOCKER-USER has no jump to IMDS-GUARD-FWD', severity: 'medium', evidence: ['-A DOCKER-USER -j RETURN'] });
      let written = host.restores().length;
      assert.equal(cli('apply').code, 0);
      assert.deepEqual(host.restores().slice(written), [{ tool: `iptables-${backend}-restore`, payload: `*filter\n-I DOCKER-USER 1 ${JUMP} -j IMDS-GUARD-FWD\nCOMMIT\n` }]);
      assert.equal(saveNatFilter(ns, 'ipv4', backend), docker.replace('-A DOCKER-USER -j RETURN\n', `-A DOCKER-USER ${JUMP} -j IMDS-GUARD-FWD\n-A DOCKER-USER -j RETURN\n`), "only our jump was added; Docker's rules are as they were");

      filter('-N', 'DOCKER');
      // A network create: Docker inserts the bridge's rules at the top of FORWARD, then puts its DOCKER-USER jump back on top.
      for (const rule of [['-i', 'br-0123456789ab', '-o', 'br-0123456789ab', '-j', 'ACCEPT'], ['-i', 'br-0123456789ab', '!', '-o', 'br-0123456789ab', '-j', 'ACCEPT'], ['-o', 'br-0123456789ab', '-j', 'DOCKER'], ['-o', 'br-0123456789ab', '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT']]) filter('-I', 'FORWARD', '1', ...rule);
      filter('-D', 'FORWARD', '-j', 'DOCKER-USER');
      filter('-I', 'FORWARD', '1', '-j', 'DOCKER-USER');
      const tables = saveNatFilter(ns, 'ipv4', backend);

      const audit = cli('audit', '--format', 'json');
      assert.equal(audit.code, 0, audit.stdout);
      const jumps = parseAudit(audit).findings.filter((f) => f.id === 'IG-201' && f.family === 'ipv4').map((f) => `${f.status} ${f.message}`);
      assert.deepEqual(jumps, [
        'pass the IMDS-GUARD jump sees all metadata traffic first in PREROUTING (2 harmless rule(s) above it)',
        "pass the IMDS-GUARD-FWD jump is in FORWARD below Docker's -j DOCKER-USER, which comes first: the jump at the top of DOCKER-USER decides (6 rule(s) above this one)",
        'pass the IMDS-GUARD-FWD jump sees all metadata traffic first in DOCKER-USER, which FORWARD jumps to first',
      ]);
      written = host.restores().length;
      const apply = cli('apply');
      assert.equal(apply.code, 0);
      assert.match(apply.stdout, /already protected; nothing written/);
      assert.equal(host.restores().length, written);
      assert.equal(saveNatFilter(ns, 'ipv4', backend), tables);
    });

    test('a raw-table NOTRACK for the endpoint is a FAIL (it skips NAT) with the command that deletes it; apply cannot repair it, says so, exits 1 and writes nothing', (t) => {
      const { ns, host, cli } = protectedHost(t, backend);
      ipt(ns, 'ipv4', backend, 'raw', ['-A', 'PREROUTING', '-d', '169.254.169.254/32', '-p', 'tcp', '-j', 'CT', '--notrack']);

      const audit = cli('audit', '--format', 'json');
      assert.equal(audit.code, 1, audit.stdout);
      const report = parseAudit(audit);
      assert.deepEqual(failingKinds(report), ['ipv4 raw/PREROUTING bypass-notrack']);
      const f = report.findings.find((x) => x.kind === 'bypass-notrack')!;
      assert.equal(f.id, 'IG-305');
      assert.deepEqual(f.evidence, ['-A PREROUTING -d 169.254.169.254/32 -p tcp -j CT --notrack']);
      assert.equal(f.remediation, `remove it if it is not wanted: iptables-${backend} -t raw -D PREROUTING -d 169.254.169.254/32 -p tcp -j CT --notrack`);

      const written = host.restores().length;
      const apply = cli('apply');
      assert.equal(apply.code, 1, apply.stdout);
      assert.match(apply.stdout, /^needs the operator: \[bypass-notrack\] ipv4 /m);
      assert.doesNotMatch(apply.stdout, /repaired:|already protected|imds-guard: protected/);
      assert.equal(host.restores().length, written);
      assert.equal(saveNatFilter(ns, 'ipv4', backend), PROTECTED_V4);
    });
  });
}

describe('the other backend', () => {
  test("imds-guard's chains left in the backend Docker does not use are FAIL other-backend findings, and apply on the right backend removes them there", (t) => {
    const { ns, host } = freshHost(t, 'drift');
    assert.equal(runCli(ns, host, ['apply', '--backend', 'nft', ...host.args]).code, 0);
    const audit = runCli(ns, host, ['audit', '--backend', 'legacy', '--format', 'json', ...host.args]);
    assert.equal(audit.code, 1);
    const leftovers = parseAudit(audit).findings.filter((f) => f.kind === 'other-backend').map((f) => `${f.status} ${f.id} ${f.family} ${f.backend} ${f.table}`);
    assert.deepEqual(leftovers.sort(), ['fail IG-303 ipv4 nft filter', 'fail IG-303 ipv4 nft nat', 'fail IG-303 ipv6 nft filter', 'fail IG-303 ipv6 nft nat']);

    const written = host.restores().length;
    assert.equal(runCli(ns, host, ['apply', '--backend', 'legacy', ...host.args]).code, 0);
    const removals = host.restores().slice(written).filter((x) => x.tool.includes('-nft-'));
    assert.deepEqual(removals.map((x) => `${x.tool} ${x.payload.split('\n')[0]}`).sort(), ['ip6tables-nft-restore *filter', 'ip6tables-nft-restore *nat', 'iptables-nft-restore *filter', 'iptables-nft-restore *nat']);
    for (const family of ['ipv4', 'ipv6'] as const) {
      assert.equal(saveTable(ns, family, 'nft', 'nat'), FRESH_NAT);
      assert.equal(saveTable(ns, family, 'nft', 'filter'), FRESH_FILTER);
    }
    assert.equal(saveNatFilter(ns, 'ipv4', 'legacy'), PROTECTED_V4);
    assert.equal(saveNatFilter(ns, 'ipv6', 'legacy'), PROTECTED_V6);
    assert.equal(runCli(ns, host, ['audit', '--backend', 'legacy', ...host.args]).code, 0);
  });

  test("a DNAT of the endpoint in the other backend's PREROUTING (same hook, may run first) is a FAIL other-backend-undermining with the iptables-legacy command that deletes it; apply leaves it, exits 1", (t) => {
    const { ns, host, cli } = protectedHost(t, 'nft');
    ipt(ns, 'ipv4', 'legacy', 'nat', ['-A', 'PREROUTING', '-d', '169.254.169.254/32', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', '10.9.9.9']);
    const legacy = saveTable(ns, 'ipv4', 'legacy', 'nat');

    const audit = cli('audit', '--format', 'json');
    assert.equal(audit.code, 1, audit.stdout);
    const report = parseAudit(audit);
    assert.deepEqual(failingKinds(report), ['ipv4 nat/PREROUTING other-backend-undermining']);
    const f = report.findings.find((x) => x.kind === 'other-backend-undermining')!;
    assert.equal(f.id, 'IG-304');
    assert.equal(f.backend, 'legacy');
    assert.equal(f.remediation, 'remove it if it is not wanted: iptables-legacy -t nat -D PREROUTING -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.9.9.9');

    const written = host.restores().length;
    const apply = cli('apply');
    assert.equal(apply.code, 1, apply.stdout);
    assert.match(apply.stdout, /^needs the operator: \[other-backend-undermining\] ipv4 /m);
    assert.equal(host.restores().length, written, 'a foreign rule is never deleted by apply');
    assert.equal(saveTable(ns, 'ipv4', 'legacy', 'nat'), legacy);
  });

  test("under legacy, iptables-nft-save runs only for a family where nft lists an iptables-nft table, and a DNAT of the endpoint there is still found (IG-304, backend nft)", (t) => {
    const { ns, host, cli } = protectedHost(t, 'legacy');
    // Every iptables-nft-save the CLI runs leaves its family in a log, then runs the real one.
    const log = join(host.root, 'nft-saves');
    host.stub('iptables-nft-save', `echo ipv4 >> ${log}; exec /usr/sbin/iptables-nft-save "$@"`);
    host.stub('ip6tables-nft-save', `echo ipv6 >> ${log}; exec /usr/sbin/ip6tables-nft-save "$@"`);
    const saves = (): string[] => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter((l) => l !== '') : []);

    assert.equal(cli('audit').code, 0);
    assert.equal(cli('apply').code, 0);
    assert.deepEqual(saves(), [], 'no iptables-nft table in this namespace: nothing for its save to read');

    ipt(ns, 'ipv4', 'nft', 'nat', ['-A', 'PREROUTING', '-d', '169.254.169.254/32', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', '10.9.9.9']);
    const audit = cli('audit', '--format', 'json');
    assert.equal(audit.code, 1, audit.stdout);
    const f = parseAudit(audit).findings.find((x) => x.kind === 'other-backend-undermining');
    assert.equal(f?.id, 'IG-304');
    assert.equal(f?.backend, 'nft');
    assert.deepEqual(saves(), ['ipv4'], 'the IPv4 save, now that nft lists ip nat; still none for IPv6');
  });
});

// A foreign rule's comment is text anyone with CAP_NET_ADMIN can plant; the remediation
// an operator pastes must hand it to iptables as one argument and never run it.
const PWNED = '/tmp/imdsg-pwned';
const PLANTED = `$(touch ${PWNED})`;

/** The words a POSIX shell makes of `command`, without running it: `set --` assigns, printf prints one a line. */
function shellWords(ns: Netns, command: string): string[] {
  const out = ns.check('sh', ['-c', `set -- ${command}\nprintf '%s\\n' "$@"`]);
  return out.split('\n').slice(0, -1);
}

for (const backend of ['nft', 'legacy'] as const satisfies readonly Backend[]) {
  test(`a foreign ACCEPT above the jump whose comment is ${PLANTED} (${backend}): the printed delete command, read by sh, gives back the rule's exact arguments and runs nothing`, (t) => {
    rmSync(PWNED, { force: true });
    t.after(() => rmSync(PWNED, { force: true }));
    const { ns, cli } = protectedHost(t, backend);
    ipt(ns, 'ipv4', backend, 'nat', ['-I', 'PREROUTING', '1', '-d', '169.254.169.254/32', '-p', 'tcp', '-m', 'comment', '--comment', PLANTED, '-j', 'ACCEPT']);

    const audit = cli('audit', '--format', 'json');
    assert.equal(audit.code, 1);
    const f = parseAudit(audit).findings.find((x) => x.kind === 'foreign-undermining')!;
    assert.deepEqual(f.evidence, [`-A PREROUTING -d 169.254.169.254/32 -p tcp -m comment --comment "${PLANTED}" -j ACCEPT`]);
    const prefix = 'remove it if it is not wanted: ';
    assert.ok(f.remediation?.startsWith(prefix), f.remediation);
    const command = (f.remediation ?? '').slice(prefix.length);
    assert.equal(command, `iptables-${backend} -t nat -D PREROUTING -d 169.254.169.254/32 -p tcp -m comment --comment '${PLANTED}' -j ACCEPT`);
    const argv = shellWords(ns, command);
    assert.deepEqual(argv, [`iptables-${backend}`, '-t', 'nat', '-D', 'PREROUTING', '-d', '169.254.169.254/32', '-p', 'tcp', '-m', 'comment', '--comment', PLANTED, '-j', 'ACCEPT']);
    // The text report prints the same command.
    const text = cli('audit');
    assert.ok(text.stdout.split('\n').includes(`       fix: ${f.remediation}`), text.stdout);

    // apply moves the jump above it and leaves it; the argv (run without a shell) deletes exactly it.
    assert.equal(cli('apply').code, 0);
    ns.check(argv[0]!, argv.slice(1));
    assert.equal(saveNatFilter(ns, 'ipv4', backend), PROTECTED_V4);
    assert.equal(existsSync(PWNED), false, `${PWNED} was created: the comment ran`);
  });
}

// The seed recipe's hand-made block, as typed and as iptables-save prints it.
const SEED_ARGS = ['-d', '169.254.169.254/32', '-i', 'docker0', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', '1.1.1.1'];
const SEED = `-A PREROUTING ${SEED_ARGS.join(' ')}`;

test("the seed recipe's hand-made DNAT below the jump is a warning whose remediation command deletes exactly it", (t) => {
  const { ns, host, cli } = protectedHost(t, 'nft');
  ipt(ns, 'ipv4', 'nft', 'nat', ['-A', 'PREROUTING', ...SEED_ARGS]);

  const audit = cli('audit', '--format', 'json');
  assert.equal(audit.code, 0, 'a warning is not drift');
  const seed = parseAudit(audit).findings.filter((f) => f.kind === 'seed-duplicate');
  assert.equal(seed.length, 1);
  assert.equal(seed[0]!.status, 'warn');
  assert.equal(seed[0]!.remediation, 'iptables-nft -t nat -D PREROUTING -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 1.1.1.1');

  const written = host.restores().length;
  assert.equal(cli('apply').code, 0);
  assert.equal(host.restores().length, written, 'apply never deletes a rule that is not ours');
  ns.check('sh', ['-c', seed[0]!.remediation!]);
  assert.equal(saveNatFilter(ns, 'ipv4', 'nft'), PROTECTED_V4);
});

test("the seed recipe's DNAT inserted above the jump sends traffic off the host: jump-not-first, and apply puts the jump above it", (t) => {
  const { ns, cli } = protectedHost(t, 'nft');
  ipt(ns, 'ipv4', 'nft', 'nat', ['-I', 'PREROUTING', '1', ...SEED_ARGS]);

  const audit = cli('audit', '--format', 'json');
  assert.equal(audit.code, 1);
  assert.deepEqual(failingKinds(parseAudit(audit)), [`${NAT} jump-not-first`, `${NAT} unprotected`]);
  assert.equal(cli('apply').code, 0);
  assert.equal(saveNatFilter(ns, 'ipv4', 'nft'), protectedWith(JUMP_LINE, SEED));
});
