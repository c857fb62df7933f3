import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { joinArgs, parseRuleArgs, splitArgs } from '../../src/core/rule.js';

describe('splitArgs', () => {
  const cases: readonly [string, string, readonly string[]][] = [
    ['plain words', '-A PREROUTING -i docker0 -j DOCKER', ['-A', 'PREROUTING', '-i', 'docker0', '-j', 'DOCKER']],
    ['a quoted comment with spaces', '-m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD', ['-m', 'comment', '--comment', 'imds-guard: metadata endpoint protection', '-j', 'IMDS-GUARD']],
    ['escaped quotes inside quotes', '--comment "say \\"hi\\""', ['--comment', 'say "hi"']],
    ['an escaped backslash', '--comment "a \\\\ b"', ['--comment', 'a \\ b']],
    ['an empty quoted argument', '--comment "" -j RETURN', ['--comment', '', '-j', 'RETURN']],
    ['runs of spaces and tabs between arguments', '-j\t RETURN  ', ['-j', 'RETURN']],
    ['a quoted part inside a word', '--comment pre"fix suf"fix', ['--comment', 'prefix suffix']],
    ['two spaces kept inside quotes', '--comment "two  spaces"', ['--comment', 'two  spaces']],
  ];
  for (const [what, line, args] of cases) {
    test(`splits ${what}`, () => assert.deepEqual(splitArgs(line), args));
  }

  test('joinArgs quotes exactly what needs it, and splitArgs reads back what joinArgs wrote', () => {
    const args = ['-m', 'comment', '--comment', 'say "hi" \\ there', '--comment', '', '-i', 'br-+', '-j', 'RETURN'];
    const line = joinArgs(args);
    assert.equal(line, '-m comment --comment "say \\"hi\\" \\\\ there" --comment "" -i br-+ -j RETURN');
    assert.deepEqual(splitArgs(line), args);
  });
});

describe('parseRuleArgs', () => {
  const cases: readonly [string, string, readonly { negated: boolean; name: string; values: string[] }[]][] = [
    ['negations bind to the next option only', '! -s 10.0.0.0/8 ! -i docker0 -d 169.254.169.254/32 -j ACCEPT', [
      { negated: true, name: '-s', values: ['10.0.0.0/8'] },
      { negated: true, name: '-i', values: ['docker0'] },
      { negated: false, name: '-d', values: ['169.254.169.254/32'] },
      { negated: false, name: '-j', values: ['ACCEPT'] },
    ]],
    ['a negated match option after its module', '-p tcp -m tcp ! --dport 80 -j RETURN', [
      { negated: false, name: '-p', values: ['tcp'] },
      { negated: false, name: '-m', values: ['tcp'] },
      { negated: true, name: '--dport', values: ['80'] },
      { negated: false, name: '-j', values: ['RETURN'] },
    ]],
    ['multiport lists and ranges as one value', '-p tcp -m multiport --dports 80,443,8000:8100 -j REDIRECT --to-ports 1', [
      { negated: false, name: '-p', values: ['tcp'] },
      { negated: false, name: '-m', values: ['multiport'] },
      { negated: false, name: '--dports', values: ['80,443,8000:8100'] },
      { negated: false, name: '-j', values: ['REDIRECT'] },
      { negated: false, name: '--to-ports', values: ['1'] },
    ]],
    ['an option with several values', '-m set --match-set blocked dst,dst -j DROP', [
      { negated: false, name: '-m', values: ['set'] },
      { negated: false, name: '--match-set', values: ['blocked', 'dst,dst'] },
      { negated: false, name: '-j', values: ['DROP'] },
    ]],
  ];
  for (const [what, line, options] of cases) {
    test(`reads ${what}`, () => assert.deepEqual(parseRuleArgs('PREROUTING', splitArgs(line)).options, options));
  }
});
