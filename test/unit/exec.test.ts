import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const EXEC = fileURLToPath(new URL('../../src/shell/exec.ts', import.meta.url));

test('a command that is not installed is command-missing, and nothing is left keeping the process alive', () => {
  // Run in a child: the bug was a timer that kept a finished process alive for 2 minutes.
  const script = `
    import { runProcess } from ${JSON.stringify(EXEC)};
    try { await runProcess('imds-guard-no-such-tool', []); } catch (e) { console.log(e.code); }
  `;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, null, 'the process had to be killed: something kept it alive');
  assert.equal(r.stdout.trim(), 'command-missing', r.stderr);
});
