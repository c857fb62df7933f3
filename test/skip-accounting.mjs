// Skip accounting for test/reporter.mjs, in plain JavaScript because node loads
// reporters before any loader hook (tsx) is in place. Types: skip-accounting.d.mts.
import { relative } from 'node:path';

// A rule and its reason are separated by the first " # ": a pattern needs no "#" after a space.
const RULE_SEPARATOR = ' # ';

/**
 * test/allowed-skips.txt: blank lines and lines starting with '#' are comments; every
 * other line is `PATTERN # WHY`. PATTERN is a JavaScript regular expression matched
 * against the skip's whole reason; WHY says why that skip is acceptable in CI. Throws on
 * a rule without a reason or a pattern that does not compile: an undocumented or broken
 * list must not let anything through.
 */
export function parseAllowList(text) {
  const rules = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const at = line.indexOf(RULE_SEPARATOR);
    const source = (at < 0 ? line : line.slice(0, at)).trim();
    const why = at < 0 ? '' : line.slice(at + RULE_SEPARATOR.length).trim();
    if (why === '') throw new Error(`allowed skips, line ${i + 1}: "${line}" says no reason (PATTERN # WHY)`);
    let pattern;
    try {
      pattern = new RegExp(`^(?:${source})$`);
    } catch (e) {
      throw new Error(`allowed skips, line ${i + 1}: ${e.message}`);
    }
    rules.push({ pattern, source, why, line: i + 1 });
  });
  return rules;
}

/** Which skips the rules accept. An empty reason (`skip: true`, `t.skip()`) never is. */
export function judgeSkips(skips, rules) {
  const allowed = [];
  const refused = [];
  for (const skip of skips) {
    const rule = skip.reason === '' ? undefined : rules.find((r) => r.pattern.test(skip.reason));
    if (rule === undefined) refused.push(skip);
    else allowed.push({ skip, rule });
  }
  return { allowed, refused };
}

const where = (s, root) => (s.file === null ? '?' : relative(root, s.file));
const said = (s) => (s.reason === '' ? '(no reason given)' : s.reason);

/** How many were skipped, then each reason with its count and files, most frequent first. */
export function describeSkips(skips, root) {
  const tests = skips.filter((s) => !s.suite).length;
  const files = new Set(skips.map((s) => s.file));
  const lines = [`skipped: ${tests} test(s) and ${skips.length - tests} suite(s) in ${files.size} file(s)`];
  const byReason = new Map();
  for (const s of skips) byReason.set(s.reason, [...(byReason.get(s.reason) ?? []), s]);
  for (const [, group] of [...byReason].sort((a, b) => b[1].length - a[1].length)) {
    lines.push(`  ${group.length} × ${said(group[0])}  [${[...new Set(group.map((s) => where(s, root)))].join(', ')}]`);
  }
  return lines;
}

/** A skip as the failure lists it: file, test or suite, reason. */
export function nameSkip(s, root) {
  return `${where(s, root)}: ${s.suite ? 'suite' : 'test'} "${s.name}" skipped: ${said(s)}`;
}
