import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { type Host, ensureBuilt, freshHost, runCli } from '../helpers/cli.js';

before(() => ensureBuilt());

/** The state file a running agent keeps (src/app/agent-state.ts), last verified `ageSeconds` ago. */
function writeState(host: Host, ageSeconds: number, lastResult: string): void {
  mkdirSync(host.stateDir, { recursive: true });
  const at = new Date(Date.now() - ageSeconds * 1000).toISOString();
  const state = { version: 1, pid: 4242, startedAt: at, lastReconcileAt: at, lastResult, lastError: null, driftCounts: {}, recentDrift: [] };
  writeFileSync(join(host.stateDir, 'state.json'), `${JSON.stringify(state)}\n`);
}

test('status exits 0 when the agent verified the host within --max-age, and 1 when its state is stale, failed or absent', (t) => {
  const { ns, host } = freshHost(t, 'status');
  const status = (...extra: string[]) => runCli(ns, host, ['status', ...extra, ...host.args]);

  const none = status();
  assert.equal(none.code, 1);
  assert.equal(none.stdout, `imds-guard: no agent state in ${host.stateDir}\n`);

  writeState(host, 5, 'converged');
  const fresh = status('--max-age', '120');
  assert.equal(fresh.code, 0, fresh.stdout);
  assert.match(fresh.stdout, /^imds-guard: agent pid 4242 last verified \d+s ago: converged\n$/);

  writeState(host, 600, 'converged');
  const stale = status('--max-age', '120');
  assert.equal(stale.code, 1, stale.stdout);
  assert.match(stale.stdout, /^imds-guard: agent pid 4242 last verified 60\ds ago: converged\n$/);

  writeState(host, 5, 'error');
  assert.equal(status('--max-age', '120').code, 1);
});
