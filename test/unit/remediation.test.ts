import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { deleteCommand } from '../../src/core/chain-findings.js';
import type { Backend, Family } from '../../src/core/family.js';
import { planReconcile } from '../../src/core/plan.js';
import { parseRuleArgs, splitArgs } from '../../src/core/rule.js';
import { parseSave } from '../../src/core/saved-table.js';
import { commandLine, iptablesCommand, shellQuote } from '../../src/core/shell-words.js';
import { config, desiredOf, freshSave, observation, policyOf, protectedLines, readable, section } from './support.js';

describe('shellQuote', () => {
  const cases: readonly [string, string][] = [
    ['-A', '-A'],
    ['169.254.169.254/32', '169.254.169.254/32'],
    ['imds-guard:d8b25c267408', 'imds-guard:d8b25c267408'],
    ['', "''"],
    ['two words', "'two words'"],
    ['$(touch /tmp/x)', "'$(touch /tmp/x)'"],
    ['`reboot`', "'`reboot`'"],
    ["it's", "'it'\\''s'"],
    ['a;b|c&d', "'a;b|c&d'"],
    ['*', "'*'"],
    ['line\nbreak', "'line\nbreak'"],
  ];
  for (const [arg, quoted] of cases) test(`${JSON.stringify(arg)} -> ${quoted}`, () => assert.equal(shellQuote(arg), quoted));
});

describe('iptablesCommand names the tool of the family and backend explicitly', () => {
  const cases: readonly [Family, Backend, string][] = [
    ['ipv4', 'nft', 'iptables-nft'],
    ['ipv4', 'legacy', 'iptables-legacy'],
    ['ipv6', 'nft', 'ip6tables-nft'],
    ['ipv6', 'legacy', 'ip6tables-legacy'],
  ];
  for (const [family, backend, tool] of cases) test(`${family} ${backend}: ${tool}`, () => assert.equal(iptablesCommand(family, backend), tool));
});

/** Rules above our jump, as someone could plant them: their comments are text an operator will paste. */
const PLANTED = '-A PREROUTING -d 169.254.0.0/16 -m comment --comment "$(touch MARKER) `touch MARKER`; touch MARKER \'x" -j ACCEPT';

describe('a remediation built from a planted rule cannot run what the rule carries', () => {
  const dir = mkdtempSync(join(tmpdir(), 'imdsg-remedy-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  // Every family and backend, so the tool name is checked with the quoting.
  const cases: readonly [Family, Backend, string][] = [
    ['ipv4', 'nft', 'iptables-nft'],
    ['ipv4', 'legacy', 'iptables-legacy'],
    ['ipv6', 'nft', 'ip6tables-nft'],
    ['ipv6', 'legacy', 'ip6tables-legacy'],
  ];
  for (const [family, backend, tool] of cases) {
    test(`${family} ${backend}: the foreign-undermining remediation names ${tool} and keeps the comment one literal argument`, () => {
      const marker = join(dir, `${family}-${backend}-pwned`);
      const planted = PLANTED.replaceAll('MARKER', marker).replace('169.254.0.0/16', family === 'ipv4' ? '169.254.0.0/16' : 'fd00::/8');
      const c = config();
      const want = desiredOf(c);
      const tables = parseSave(section('nat', protectedLines(want[family], 'nat', { above: [planted] })) + section('filter', protectedLines(want[family], 'filter')));
      const families = { ipv4: readable(freshSave()), ipv6: readable(freshSave()), [family]: readable(tables) } as const;
      const p = planReconcile(want, observation(families, { backend: { backend, reason: 'test' } }), policyOf(c));
      const f = p.findings.find((x) => x.kind === 'foreign-undermining');
      assert.ok(f?.remediation !== undefined, JSON.stringify(p.findings.map((x) => x.kind)));
      const prefix = 'remove it if it is not wanted: ';
      assert.ok(f.remediation.startsWith(prefix));
      const command = f.remediation.slice(prefix.length);
      const comment = `$(touch ${marker}) \`touch ${marker}\`; touch ${marker} 'x`;
      assert.equal(command, `${tool} -t nat -D PREROUTING -d ${family === 'ipv4' ? '169.254.0.0/16' : 'fd00::/8'} -m comment --comment ${shellQuote(comment)} -j ACCEPT`);

      // Pasted into a shell, it runs the named tool with exactly the rule's arguments, and nothing else.
      const argsFile = join(dir, `${tool}.args`);
      writeFileSync(join(dir, tool), `#!/bin/sh\nprintf '%s\\n' "$@" > '${argsFile}'\n`);
      chmodSync(join(dir, tool), 0o755);
      execFileSync('/bin/sh', ['-c', command], { env: { PATH: dir } });
      assert.equal(existsSync(marker), false, 'the planted substitution did not run');
      assert.deepEqual(readFileSync(argsFile, 'utf8').split('\n').slice(0, -1), ['-t', 'nat', '-D', ...splitArgs(planted).slice(1)]);
    });
  }

  test('deleteCommand quotes every argument that needs it, whatever table the rule is in', () => {
    const r = parseRuleArgs('PREROUTING', splitArgs('-d 169.254.169.254/32 -m comment --comment "a b" -j CT --notrack'));
    assert.equal(deleteCommand('ipv6', 'legacy', 'raw', r), "ip6tables-legacy -t raw -D PREROUTING -d 169.254.169.254/32 -m comment --comment 'a b' -j CT --notrack");
    assert.equal(commandLine(['iptables-nft', '-t', 'nat', '-D', 'X', '--comment', '']), "iptables-nft -t nat -D X --comment ''");
  });
});
