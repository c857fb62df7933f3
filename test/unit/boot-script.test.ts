import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { DIGEST_MARK, inspectBootScript, isOurBootScript, renderBootScript } from '../../src/core/boot-script.js';
import { toCgroupPath } from '../../src/core/cgroup.js';
import { bootHostNetRules } from '../../src/core/host-network.js';
import { config, desiredOf, jumpLine, ruleLines } from './support.js';

const C = config();
const PARENT = toCgroupPath('/docker')!;
const PLAIN = desiredOf(C);
const HOSTNET = desiredOf(C, { ipv4: bootHostNetRules('ipv4', C.endpoints, PARENT), ipv6: bootHostNetRules('ipv6', C.endpoints, PARENT) });
const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden', 'boot-nft-hostnet.sh');

/** The here-document bodies of the script, in order: one per restore. */
function restores(script: string): { call: string; body: string[] }[] {
  const out: { call: string; body: string[] }[] = [];
  const lines = script.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i]!.startsWith('  ig_restore ')) continue;
    const end = lines.indexOf('IMDS_GUARD_RULES', i + 1);
    out.push({ call: lines[i]!.split(' <<')[0]!.trim(), body: lines.slice(i + 1, end) });
  }
  return out;
}

describe('renderBootScript', () => {
  const script = renderBootScript('nft', [HOSTNET.ipv4, HOSTNET.ipv6], PARENT);

  test('the default configuration with the host-network parent renders exactly the golden script', () => {
    if (process.env['UPDATE_GOLDEN'] === '1') writeFileSync(GOLDEN, script);
    assert.equal(script, readFileSync(GOLDEN, 'utf8'), `${GOLDEN} differs (UPDATE_GOLDEN=1 rewrites it; review the diff)`);
  });

  test('one restore per owned chain and family, each holding exactly that chain\'s rules and then its jump', () => {
    const expected = [HOSTNET.ipv4, HOSTNET.ipv6].flatMap((f) =>
      f.chains.map((c) => ({ call: `ig_restore "$save" "$restore" ${c.table} ${c.hook} ${c.chain}`, body: [...ruleLines(c), jumpLine(c).replace(`-A ${c.hook} `, `-I ${c.hook} 1 `)] })),
    );
    assert.equal(expected.length, 6);
    assert.deepEqual(restores(script), expected);
  });

  test('the container parent cgroup is made in the cgroup2 hierarchy before any restore names it', () => {
    const mkdir = script.indexOf(`mkdir -p "$cg_root"'/docker'`);
    assert.ok(mkdir > 0);
    assert.ok(mkdir < script.indexOf('  ig_restore '), 'before the first restore');
    assert.doesNotMatch(renderBootScript('nft', [PLAIN.ipv4, PLAIN.ipv6]), /mkdir|cg_root/, 'no parent, no mkdir');
  });

  test('the OUTPUT rule at boot carries no inode (the cgroup is new at every boot)', () => {
    assert.match(script, /-m cgroup --path \/docker -m comment --comment imds-guard:[0-9a-f]{12} -j REJECT/);
    assert.doesNotMatch(script, /cgino=/);
  });

  test('for the legacy backend only the header, the digest and the tools it picks differ', () => {
    const legacy = renderBootScript('legacy', [HOSTNET.ipv4, HOSTNET.ipv6], PARENT);
    const strip = (s: string) => s.replace(/^# imds-guard-digest: .*$/m, '');
    assert.equal(strip(legacy), strip(script).replace('for the nft iptables backend', 'for the legacy iptables backend').replaceAll('tables-nft-', 'tables-legacy-'));
    assert.notEqual(legacy.match(/sha256:[0-9a-f]{64}/)![0], script.match(/sha256:[0-9a-f]{64}/)![0]);
  });

  test('a family without chains (no IPv6 endpoints) gets no section', () => {
    const v4 = desiredOf(config({ endpoints: ['169.254.169.254'] }));
    const s = renderBootScript('nft', [v4.ipv4, v4.ipv6]);
    assert.match(s, /^# ipv4: nat IMDS-GUARD \(1 rule\(s\)\), filter IMDS-GUARD-FWD \(1 rule\(s\)\)$/m);
    assert.doesNotMatch(s, /ipv6|ip6tables/);
  });

  test('is a syntactically valid POSIX shell script', () => {
    execFileSync('/bin/sh', ['-n'], { input: script });
  });
});

describe('the boot script run against fake iptables tools', () => {
  // Fakes on a PATH without /usr/sbin, so the real tools can never be reached; no cgroup
  // parent, so the script touches nothing outside the temporary directory.
  const dir = mkdtempSync(join(tmpdir(), 'imdsg-boot-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const v4 = desiredOf(config({ endpoints: ['169.254.169.254'] }));
  const natJump = jumpLine(v4.ipv4.chains[0]!);

  function runWith(saves: Record<string, string>): { status: number | null; payloads: string } {
    rmSync(join(dir, 'payloads'), { force: true });
    for (const [table, text] of Object.entries(saves)) writeFileSync(join(dir, `save.${table}`), text);
    writeFileSync(join(dir, 'iptables-nft-save'), `#!/bin/sh\n[ "$1" = -t ] || exit 2\ncat '${dir}'/save."$2"\n`);
    writeFileSync(join(dir, 'iptables-nft-restore'), `#!/bin/sh\n{ echo "# restore $*"; cat; } >> '${dir}/payloads'\n`);
    for (const f of ['iptables-nft-save', 'iptables-nft-restore']) chmodSync(join(dir, f), 0o755);
    const r = spawnSync('/bin/sh', ['-c', renderBootScript('nft', [v4.ipv4, v4.ipv6])], { env: { PATH: `${dir}:/usr/bin` }, encoding: 'utf8' });
    return { status: r.status, payloads: existsSync(join(dir, 'payloads')) ? readFileSync(join(dir, 'payloads'), 'utf8') : '' };
  }

  test('on a fresh host it declares each chain, fills it and inserts its jump, one restore per chain', () => {
    const r = runWith({ nat: '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n', filter: '*filter\n:FORWARD DROP [0:0]\nCOMMIT\n' });
    assert.equal(r.status, 0);
    const [nat, fwd] = v4.ipv4.chains as [NonNullable<(typeof v4.ipv4.chains)[0]>, NonNullable<(typeof v4.ipv4.chains)[0]>];
    assert.equal(
      r.payloads,
      [
        '# restore --noflush -w 5',
        '*nat',
        ':IMDS-GUARD - [0:0]',
        ...ruleLines(nat),
        jumpLine(nat).replace('-A PREROUTING ', '-I PREROUTING 1 '),
        'COMMIT',
        '# restore --noflush -w 5',
        '*filter',
        ':IMDS-GUARD-FWD - [0:0]',
        ...ruleLines(fwd),
        jumpLine(fwd).replace('-A FORWARD ', '-I FORWARD 1 '),
        'COMMIT',
        '',
      ].join('\n'),
    );
  });

  test('run again, it deletes every existing jump to the chain by its text before inserting one: never two jumps', () => {
    const nat = ['*nat', ':PREROUTING ACCEPT [0:0]', ':IMDS-GUARD - [0:0]', natJump, '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER', natJump, '-A PREROUTING -j IMDS-GUARD-FWD-LOOKALIKE', 'COMMIT', ''].join('\n');
    const r = runWith({ nat, filter: '*filter\n:FORWARD DROP [0:0]\nCOMMIT\n' });
    assert.equal(r.status, 0);
    const natPayload = r.payloads.split('# restore')[1]!;
    assert.equal(natPayload.split('\n').filter((l) => l.startsWith('-D ')).length, 2);
    assert.ok(natPayload.includes(`\n${natJump.replace('-A ', '-D ')}\n`));
    assert.doesNotMatch(natPayload, /LOOKALIKE|DOCKER/, "a rule that is not our jump is never named");
  });

  test('a save that fails makes the script exit non-zero and restore nothing for that chain', () => {
    writeFileSync(join(dir, 'save.filter'), '');
    rmSync(join(dir, 'save.nat'), { force: true });
    const r = runWith({ filter: '*filter\n:FORWARD DROP [0:0]\nCOMMIT\n' });
    assert.equal(r.status, 1);
    assert.doesNotMatch(r.payloads, /\*nat/);
    assert.match(r.payloads, /\*filter/, 'the other chain is still restored');
  });
});

describe('inspectBootScript', () => {
  const expected = renderBootScript('nft', [HOSTNET.ipv4, HOSTNET.ipv6], PARENT);
  const otherConfig = renderBootScript('nft', [PLAIN.ipv4, PLAIN.ipv6]);
  const cases: readonly [string, { content: string; mode: number } | null, string][] = [
    ['the file as rendered, mode 755, is ok', { content: expected, mode: 0o755 }, 'ok'],
    ['no file is missing', null, 'missing'],
    ['an intact script written for another configuration (no host-network parent) is stale', { content: otherConfig, mode: 0o755 }, 'stale'],
    ['a rule line changed by hand is edited', { content: expected.replace('--to-ports 1\n', '--to-ports 2\n'), mode: 0o755 }, 'edited'],
    ['the mkdir of the parent removed by hand is edited', { content: expected.replace(/^if \[ -n "\$cg_root" \].*\n/m, ''), mode: 0o755 }, 'edited'],
    ['a line added at the end is edited', { content: `${expected}curl http://169.254.169.254/\n`, mode: 0o755 }, 'edited'],
    ['a script without our digest line is edited', { content: expected.replace(/^# imds-guard-digest.*\n/m, ''), mode: 0o755 }, 'edited'],
    ['the right content without execute bits is not-executable', { content: expected, mode: 0o644 }, 'not-executable'],
    ['the right content executable by its owner only is not-executable', { content: expected, mode: 0o744 }, 'not-executable'],
  ];
  for (const [behaviour, file, state] of cases) test(behaviour, () => assert.equal(inspectBootScript(file, expected), state));

  test('the digest covers everything after its line', () => {
    const [, rest] = expected.split(`${DIGEST_MARK}`) as [string, string];
    assert.match(rest, /^[0-9a-f]{64}\nset -u\n/);
  });

  test('isOurBootScript tells our script from a hand-made one at the same path', () => {
    assert.equal(isOurBootScript(expected), true);
    assert.equal(isOurBootScript('#!/bin/sh\niptables -t nat -I PREROUTING -d 169.254.169.254 -j DNAT --to-destination 1.1.1.1\n'), false);
  });
});
