// The test runs' reporter (scripts/run-tests): node's spec reporter, unchanged, plus skip
// accounting. Every skipped test and suite (`{ skip: reason }`, `t.skip(reason)`) is
// counted; just before node's closing summary it prints how many were skipped and why,
// and under CI=true a skip that test/allowed-skips.txt does not accept is listed and
// fails the run (exit status 1). node's own summary stays the closing lines.
// Plain JavaScript: node loads reporters before any loader hook (tsx) is in place.
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { spec as SpecReporter } from 'node:test/reporters';
import { fileURLToPath } from 'node:url';
import { describeSkips, judgeSkips, nameSkip, parseAllowList } from './skip-accounting.mjs';

const REPO = resolve(fileURLToPath(new URL('..', import.meta.url)));
// The same test as test/helpers/capability.ts inCi().
const inCi = () => process.env.CI === 'true';

/** The lines printed before node's summary; sets process.exitCode when the run must fail. */
function accounting(skips) {
  const lines = describeSkips(skips, REPO);
  let verdict;
  try {
    verdict = judgeSkips(skips, parseAllowList(readFileSync(process.env.IMDSG_ALLOWED_SKIPS ?? join(REPO, 'test/allowed-skips.txt'), 'utf8')));
  } catch (e) {
    process.exitCode = 1;
    return [...lines, `✖ the list of allowed skips is unusable: ${e.message}`];
  }
  for (const { skip, rule } of verdict.allowed) lines.push(`  allowed in CI by line ${rule.line} (${rule.why}): ${nameSkip(skip, REPO)}`);
  if (verdict.refused.length === 0) return lines;
  if (!inCi()) return [...lines, `${verdict.refused.length} of these would fail CI (CI=true): not on test/allowed-skips.txt`];
  process.exitCode = 1;
  return [
    ...lines,
    `✖ CI=true: ${verdict.refused.length} skip(s) not on test/allowed-skips.txt fail the run (a capability the CI machine must have is missing, or the test should fail instead of skipping):`,
    ...verdict.refused.map((s) => `  ${nameSkip(s, REPO)}`),
  ];
}

/** The first line of node's closing summary ("tests N"), from the root test. */
const isSummaryStart = (e) => e.type === 'test:diagnostic' && e.data.nesting === 0 && e.data.file === undefined && /^tests \d+$/.test(e.data.message ?? '');

export default async function* reporter(source) {
  const spec = new SpecReporter();
  // spec's transform is synchronous: what one event makes is readable right after the write.
  const drain = function* () {
    for (let chunk = spec.read(); chunk !== null; chunk = spec.read()) yield String(chunk);
  };
  const skips = [];
  let printed = false;
  for await (const e of source) {
    const d = e.data;
    if (e.type === 'test:pass' && d.skip !== undefined && d.skip !== false) {
      skips.push({ file: d.file ?? null, name: d.name, reason: typeof d.skip === 'string' ? d.skip : '', suite: d.details?.type === 'suite' });
    }
    if (!printed && isSummaryStart(e)) {
      printed = true;
      for (const line of accounting(skips)) yield `ℹ ${line}\n`;
    }
    spec.write(e);
    yield* drain();
  }
  spec.end();
  // spec's flush (the list of failing tests) comes after the end of its input.
  await new Promise((r) => setImmediate(r));
  yield* drain();
}
