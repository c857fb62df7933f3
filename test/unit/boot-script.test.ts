import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { inspectBootScript, isOurBootScript, renderBootScript } from '../../src/core/boot-script.js';
import { resolveConfig } from '../../src/core/config.js';
import { desiredFamily } from '../../src/core/desired.js';

const config = resolveConfig([]);
const families = [desiredFamily(config, 'ipv4', config.interfaces), desiredFamily(config, 'ipv6', config.interfaces)];

// The OpenRC local.d script for the default configuration on an nft host. Rules sit in
// quoted here-documents; every existing jump is deleted by its saved text before one is
// inserted on top, all in one restore per family.
const NFT_SCRIPT = [
  '#!/bin/sh',
  '# imds-guard: hides the cloud metadata endpoints from Docker bridges at boot.',
  '# Written by imds-guard for the nft iptables backend. Do not edit: edits are',
  '# reported as drift and replaced by `imds-guard apply`. Safe to run any number of times.',
  '# imds-guard-digest: sha256:977305b21b3ac6d0574edc68d0ac3892cfab7feb15a4c7a900c8873b44530f0c',
  'set -u',
  '',
  '# Prints the first of the named commands that exists.',
  'ig_pick() {',
  '  for c in "$@"; do',
  '    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return 0; fi',
  '  done',
  '  return 1',
  '}',
  '',
  '# $1 save command, $2 restore command; the chain rules come on stdin.',
  'ig_protect() {',
  '  save=$1 restore=$2',
  '  rules=$(cat)',
  '  current=$("$save" -t nat) || return 1',
  '  {',
  '    echo \'*nat\'',
  '    echo \':IMDS-GUARD - [0:0]\'',
  '    printf \'%s\\n\' "$rules"',
  '    printf \'%s\\n\' "$current" | sed -n \'s/^-A PREROUTING \\(.*-j IMDS-GUARD\\)$/-D PREROUTING \\1/p\'',
  '    cat <<\'IMDS_GUARD_JUMP\'',
  '-I PREROUTING 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD',
  'IMDS_GUARD_JUMP',
  '    echo \'COMMIT\'',
  '  } | "$restore" --noflush -w 5',
  '}',
  '',
  'status=0',
  '',
  '# ipv4: 3 rule(s)',
  'if save=$(ig_pick iptables-nft-save iptables-save) && restore=$(ig_pick iptables-nft-restore iptables-restore); then',
  '  ig_protect "$save" "$restore" <<\'IMDS_GUARD_RULES\' || { echo "imds-guard: could not protect ipv4" >&2; status=1; }',
  '-A IMDS-GUARD -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:1189f431dc7c -j REDIRECT --to-ports 1',
  '-A IMDS-GUARD -d 169.254.169.254/32 -i docker_gwbridge -p tcp -m tcp --dport 80 -m comment --comment imds-guard:abec39a8c6fe -j REDIRECT --to-ports 1',
  '-A IMDS-GUARD -d 169.254.169.254/32 -i br-+ -p tcp -m tcp --dport 80 -m comment --comment imds-guard:ba669814d24f -j REDIRECT --to-ports 1',
  'IMDS_GUARD_RULES',
  'else',
  '  echo "imds-guard: no ipv4 iptables-restore found" >&2; status=1',
  'fi',
  '',
  '# ipv6: 3 rule(s)',
  'if save=$(ig_pick ip6tables-nft-save ip6tables-save) && restore=$(ig_pick ip6tables-nft-restore ip6tables-restore); then',
  '  ig_protect "$save" "$restore" <<\'IMDS_GUARD_RULES\' || { echo "imds-guard: could not protect ipv6" >&2; status=1; }',
  '-A IMDS-GUARD -d fd00:ec2::254/128 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:ad75a5f5a288 -j REDIRECT --to-ports 1',
  '-A IMDS-GUARD -d fd00:ec2::254/128 -i docker_gwbridge -p tcp -m tcp --dport 80 -m comment --comment imds-guard:4cf25008eba5 -j REDIRECT --to-ports 1',
  '-A IMDS-GUARD -d fd00:ec2::254/128 -i br-+ -p tcp -m tcp --dport 80 -m comment --comment imds-guard:56f9c9b18cf9 -j REDIRECT --to-ports 1',
  'IMDS_GUARD_RULES',
  'else',
  '  echo "imds-guard: no ipv6 iptables-restore found" >&2; status=1',
  'fi',
  'exit $status',
  '',
].join('\n');

describe('renderBootScript', () => {
  test('the default configuration on an nft host renders exactly the golden script', () => {
    assert.equal(renderBootScript('nft', families), NFT_SCRIPT);
  });

  test('for the legacy backend only the header, the digest and the tools it picks differ', () => {
    const expected = NFT_SCRIPT.replace('for the nft iptables backend', 'for the legacy iptables backend')
      .replace(/sha256:[0-9a-f]{64}/, 'sha256:f76143e08256954479ec2bf00be8665df46afdf4259439fb553c739b10b3695a')
      .replaceAll('tables-nft-', 'tables-legacy-');
    assert.equal(renderBootScript('legacy', families), expected);
  });

  test('a family without rules (no IPv6 endpoints) gets no section', () => {
    const v4only = resolveConfig([{ source: 'test', values: { endpoints: ['169.254.169.254'] } }]);
    const script = renderBootScript('nft', [desiredFamily(v4only, 'ipv4', ['docker0']), desiredFamily(v4only, 'ipv6', ['docker0'])]);
    assert.match(script, /^# ipv4: 1 rule\(s\)$/m);
    assert.doesNotMatch(script, /ipv6/);
  });
});

describe('inspectBootScript', () => {
  const expected = renderBootScript('nft', families);
  const otherConfig = renderBootScript('nft', [desiredFamily(config, 'ipv4', ['docker0'])]);
  const cases: readonly [string, { content: string; mode: number } | null, string][] = [
    ['the file as rendered, mode 755, is ok', { content: expected, mode: 0o755 }, 'ok'],
    ['no file is missing', null, 'missing'],
    ['an intact script written for another configuration is stale', { content: otherConfig, mode: 0o755 }, 'stale'],
    ['a rule line changed by hand is edited', { content: expected.replace('--to-ports 1\n', '--to-ports 2\n'), mode: 0o755 }, 'edited'],
    ['a script without our digest line is edited', { content: expected.replace(/^# imds-guard-digest.*\n/m, ''), mode: 0o755 }, 'edited'],
    ['the right content without execute bits is not-executable', { content: expected, mode: 0o644 }, 'not-executable'],
  ];
  for (const [behaviour, file, state] of cases) {
    test(behaviour, () => assert.equal(inspectBootScript(file, expected), state));
  }

  test('isOurBootScript tells our script from a hand-made one at the same path', () => {
    assert.equal(isOurBootScript(expected), true);
    assert.equal(isOurBootScript('#!/bin/sh\niptables -t nat -I PREROUTING -d 169.254.169.254 -j DNAT --to-destination 1.1.1.1\n'), false);
  });
});
