// The skip accounting of scripts/run-tests (and so of scripts/test-all and CI), run for
// real on small sample files: a skip outside the allow-list fails a CI=true run (exit 1,
// the skips listed before node's closing summary); a clean run passes; outside CI skips
// are only counted.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { REPO } from '../helpers/cli.js';
import { runProc } from '../helpers/proc.js';
import { type SkipRecord, judgeSkips, parseAllowList } from '../skip-accounting.mjs';

const RUN_TESTS = join(REPO, 'scripts/run-tests');
const SAMPLES = 'test/ci/fixtures';
const tmp = mkdtempSync(join(tmpdir(), 'imdsg-skips-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

interface Run {
  code: number;
  out: string;
  summary: Record<string, number>;
}

/** scripts/run-tests on sample files; CI set or unset as asked, other env as ours. */
async function runTests(files: readonly string[], opts: { ci: boolean; allowList?: string }): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.CI;
  // Set in a test file's process; a nested `node --test` seeing it would run no file.
  delete env.NODE_TEST_CONTEXT;
  delete env.IMDSG_ALLOWED_SKIPS;
  if (opts.ci) env.CI = 'true';
  if (opts.allowList !== undefined) env.IMDSG_ALLOWED_SKIPS = opts.allowList;
  const r = await runProc('bash', [RUN_TESTS, ...files.map((f) => `${SAMPLES}/${f}`)], { env, timeoutMs: 120_000 });
  const out = r.stdout + r.stderr;
  // node's closing summary: "ℹ tests 5", "ℹ fail 1", ...
  const summary = Object.fromEntries([...out.matchAll(/^ℹ (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$/gm)].map((m) => [m[1] ?? '', Number(m[2])]));
  return { code: r.code, out, summary };
}

describe('scripts/run-tests counts skips and fails CI on one not allowed', { concurrency: true }, () => {
  test('a CI=true run with a skip not on the list fails: exit 1, each skip named before node\'s closing summary', async () => {
    const r = await runTests(['clean.sample.ts', 'skips.sample.ts'], { ci: true });
    assert.equal(r.code, 1, r.out);
    // node counts no failed test: the exit status is what fails the run.
    assert.deepEqual(r.summary, { tests: 4, suites: 1, pass: 2, fail: 0, cancelled: 0, skipped: 2, todo: 0 }, r.out);
    assert.match(r.out, /^ℹ ✖ CI=true: 3 skip\(s\) not on test\/allowed-skips\.txt fail the run/m);
    assert.ok(r.out.indexOf('✖ CI=true') < r.out.indexOf('ℹ tests 4'), 'the refused skips come before node\'s summary');
    assert.match(r.out, /^ℹ skipped: 2 test\(s\) and 1 suite\(s\) in 1 file\(s\)$/m);
    for (const reason of ['conntrack is not installed', 'no cgroup2 hierarchy on this machine', 'needs root']) {
      assert.match(r.out, new RegExp(`^ℹ +1 × ${reason} +\\[test/ci/fixtures/skips\\.sample\\.ts\\]$`, 'm'), r.out);
      assert.match(r.out, new RegExp(`skips\\.sample\\.ts: (test|suite) "[^"]+" skipped: ${reason}`), r.out);
    }
  });

  test('a clean CI=true run passes, with node\'s closing summary as the last lines', async () => {
    const r = await runTests(['clean.sample.ts'], { ci: true });
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(r.summary, { tests: 1, suites: 0, pass: 1, fail: 0, cancelled: 0, skipped: 0, todo: 0 }, r.out);
    assert.match(r.out, /^ℹ skipped: 0 test\(s\) and 0 suite\(s\) in 0 file\(s\)$/m);
    assert.match(r.out.trimEnd(), /ℹ duration_ms [\d.]+$/);
  });

  test('outside CI the same skips are counted and named as failing CI, and the run passes', async () => {
    const r = await runTests(['skips.sample.ts'], { ci: false });
    assert.equal(r.code, 0, r.out);
    assert.equal(r.summary.fail, 0, r.out);
    assert.match(r.out, /^ℹ 3 of these would fail CI \(CI=true\): not on test\/allowed-skips\.txt$/m);
  });

  test('a CI=true run passes when the allow-list accepts every skip, and says which line accepted each', async () => {
    const list = join(tmp, 'all-allowed.txt');
    writeFileSync(list, '# test list\nconntrack is not installed # sample\nno cgroup2 .* machine # sample\nneeds root # sample\n');
    const r = await runTests(['skips.sample.ts'], { ci: true, allowList: list });
    assert.equal(r.code, 0, r.out);
    assert.equal(r.summary.fail, 0, r.out);
    assert.match(r.out, /allowed in CI by line 3 \(sample\): .*no cgroup2 hierarchy on this machine/);
  });

  test('requireCapability and skipWithout skip outside CI, and fail under CI=true', async () => {
    const outside = await runTests(['capability.sample.ts'], { ci: false });
    assert.equal(outside.code, 0, outside.out);
    assert.match(outside.out, /# frobnicator: no frobnicator on this machine/);
    assert.match(outside.out, /# a built dist\/: dist\/cli\.js is missing \(npm run build\)/);
    const ci = await runTests(['capability.sample.ts'], { ci: true });
    assert.equal(ci.code, 1, ci.out);
    assert.doesNotMatch(ci.out, /✖ CI=true: \d+ skip/);
    // The test fails on the capability, and the suite's before hook too (its one test is
    // cancelled); nothing skipped, so the audit passes.
    assert.equal(ci.summary.fail, 1, ci.out);
    assert.equal(ci.summary.cancelled, 1, ci.out);
    assert.equal(ci.summary.skipped, 0, ci.out);
    assert.match(ci.out, /frobnicator: no frobnicator on this machine \(CI=true: the CI machine must have it/);
    assert.match(ci.out, /a built dist\/: dist\/cli\.js is missing \(npm run build\) \(CI=true/);
  });
});

describe('the allow-list', () => {
  const skip = (reason: string): SkipRecord => ({ file: '/x.test.ts', name: 'n', reason, suite: false });

  test('a pattern must match the whole reason', () => {
    const rules = parseAllowList('IPVS .* # why\n');
    const v = judgeSkips([skip('IPVS is not built'), skip('no IPVS is not built'), skip('IPVS')], rules);
    assert.deepEqual(v.allowed.map((a) => a.skip.reason), ['IPVS is not built']);
    assert.deepEqual(v.refused.map((s) => s.reason), ['no IPVS is not built', 'IPVS']);
  });

  test('a skip without a reason is never accepted, not even by a pattern that matches anything', () => {
    assert.equal(judgeSkips([skip('')], parseAllowList('.* # anything\n')).refused.length, 1);
  });

  test('a rule without its reason, or with a broken pattern, is an error, not a rule', () => {
    assert.throws(() => parseAllowList('needs root\n'), /line 1: "needs root" says no reason/);
    assert.throws(() => parseAllowList('# c\nneeds root #   \n'), /line 2/);
    assert.throws(() => parseAllowList('needs (root # why\n'), /line 1: Invalid regular expression/);
  });

  test('the shipped list parses', () => {
    assert.doesNotThrow(() => parseAllowList(readFileSync(join(REPO, 'test/allowed-skips.txt'), 'utf8')));
  });
});
