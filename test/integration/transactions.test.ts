import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { before, describe, test } from 'node:test';
import { FRESH_FILTER, REPO, ensureBuilt, fixture, freshHost, ipt, runCli, saveNatFilter, saveTable } from '../helpers/cli.js';
import { FRESH_NAT } from '../helpers/netns.js';
import { requireCapability } from '../helpers/capability.js';
import type { Backend } from '../helpers/netns.js';

before(() => ensureBuilt());

/** Holds an exclusive flock on `file` until the returned release is called. */
async function holdLock(file: string): Promise<() => void> {
  // Its own process group, so release ends flock and its sleep together, by id.
  const holder = spawn('flock', ['-x', file, '-c', 'echo locked; exec sleep 120'], { detached: true, stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = (await once(holder.stdout, 'data')) as [Buffer];
  assert.equal(chunk.toString().trim(), 'locked');
  let released = false;
  return () => {
    if (released) return;
    released = true;
    try {
      process.kill(-holder.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  };
}

describe('the xtables lock (legacy backend)', () => {
  test('apply --lock-wait 1 while another process holds the xtables lock exits 3 with one line naming the lock and applies nothing; once the lock is free it applies', async (t) => {
    const { ns, host } = freshHost(t, 'lock');
    const lockfile = join(host.root, 'xtables.lock');
    const env = { XTABLES_LOCKFILE: lockfile };
    const release = await holdLock(lockfile);
    t.after(release);

    // iptables 1.8.9 reads XTABLES_LOCKFILE; make sure this one does before relying on it.
    const probe = ns.run('iptables-legacy-restore', ['--noflush', '-w', '1'], { env: { ...process.env, ...env }, input: '*nat\nCOMMIT\n' });
    if (!requireCapability(t, 'xtables lock probe', probe.code === 4, `iptables-legacy-restore ignores XTABLES_LOCKFILE here (exit ${probe.code}: ${probe.stderr.trim()})`)) return;
    const before = ns.saveNat('ipv4', 'legacy');

    const r = runCli(ns, host, ['apply', '--backend', 'legacy', '--lock-wait', '1', ...host.args], { env });
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.equal(r.stderr, 'imds-guard: iptables-legacy-restore: the xtables lock was held by another process for 1s; nothing was applied\n');
    assert.equal(ns.saveNat('ipv4', 'legacy'), before);
    assert.equal(ns.saveNat('ipv6', 'legacy').includes('IMDS-GUARD'), false);
    assert.equal(existsSync(host.bootScript), false, 'the boot script is written only after the nat tables');

    release();
    const again = runCli(ns, host, ['apply', '--backend', 'legacy', '--lock-wait', '1', ...host.args], { env });
    assert.equal(again.code, 0, again.stderr);
    assert.ok(ns.saveNat('ipv4', 'legacy').includes('-j IMDS-GUARD'));
  });
});

const BAD_LINE_3 = `*nat
:IMDS-GUARD - [0:0]
-A IMDS-GUARD -i docker0 -p tcp -m tcp --dport 99999 -j REDIRECT --to-ports 1
-I PREROUTING 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
COMMIT
`;

const BAD_LINE_5 = `*nat
:IMDS-GUARD - [0:0]
-A IMDS-GUARD -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 1
-I PREROUTING 1 -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD
-A IMDS-GUARD -d 169.254.169.254/32 -i br-+ -p tcp -m tcp --dport 99999 -j REDIRECT --to-ports 1
COMMIT
`;

/** Runs the real iptables adapter inside the namespace and prints what its restore did. */
const ADAPTER_SCRIPT = `
import { readFileSync } from 'node:fs';
import { createIptables } from ${JSON.stringify(pathToFileURL(join(REPO, 'src/shell/iptables.ts')).href)};
import { runProcess } from ${JSON.stringify(pathToFileURL(join(REPO, 'src/shell/exec.ts')).href)};
const [backend, payloadFile] = process.argv.slice(2);
try {
  await createIptables(runProcess, { lockWaitSeconds: 5 }).restore('ipv4', backend, readFileSync(payloadFile, 'utf8'));
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  console.log(JSON.stringify({ name: e.name, code: e.code, exitCode: e.exitCode, message: e.message }));
}
`;

for (const backend of ['nft', 'legacy'] as const satisfies readonly Backend[]) {
  describe(`a restore that fails part-way (${backend})`, () => {
    const why = "invalid port/service `99999' specified";
    for (const [name, payload, line] of [
      ['its 3rd line', BAD_LINE_3, 3],
      ['a line after a chain rewrite and the jump insert', BAD_LINE_5, 5],
    ] as const) {
      test(`a transaction rejected at ${name} applies nothing and is reported as restore-failed with the payload line`, (t) => {
        const { ns, host } = freshHost(t, 'txn');
        ns.restore('ipv4', backend, '*nat\n:DOCKER - [0:0]\n-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\nCOMMIT\n');
        const before = ns.saveNat('ipv4', backend);
        // .mts: outside the repo no package.json says "module", and the script uses top-level await.
        const script = join(host.root, 'restore.mts');
        const payloadFile = join(host.root, 'payload');
        writeFileSync(script, ADAPTER_SCRIPT);
        writeFileSync(payloadFile, payload);

        const r = ns.run(process.execPath, ['--import', 'tsx', script, backend, payloadFile], { cwd: REPO });
        assert.equal(r.code, 0, r.stderr);
        const result = JSON.parse(r.stdout) as { name: string; code: string; exitCode: number; message: string };
        const tool = backend === 'nft' ? 'iptables-nft-restore' : 'iptables-restore';
        assert.deepEqual(result, {
          name: 'CommandError',
          code: 'restore-failed',
          exitCode: 3,
          message: `iptables-${backend}-restore rejected the transaction, nothing was applied: ${tool} v1.8.9 (${backend === 'nft' ? 'nf_tables' : 'legacy'}): ${why} (payload line ${line}: ${payload.split('\n')[line - 1]})`,
        });
        assert.equal(ns.saveNat('ipv4', backend), before);
      });
    }
  });
}

describe('a transaction rejected through the CLI', () => {
  test('a restore that refuses every transaction makes apply exit 3 with one line naming the payload line; nothing is applied and no boot script is written', (t) => {
    const { ns, host } = freshHost(t, 'txn');
    // As iptables-nft-restore reports a line the kernel refused (the payload is read, then refused).
    host.stub('iptables-nft-restore', 'cat >/dev/null; echo "iptables-nft-restore: line 3 failed" >&2; exit 1');
    const r = runCli(ns, host, ['apply', '--backend', 'nft', '--log-level', 'silent', ...host.args]);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, 'imds-guard: iptables-nft-restore rejected the transaction, nothing was applied: iptables-nft-restore: line 3 failed (payload line 3: -A IMDS-GUARD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-guard:d8b25c267408 -j REDIRECT --to-ports 1)\n');
    for (const family of ['ipv4', 'ipv6'] as const) {
      assert.equal(saveTable(ns, family, 'nft', 'nat'), FRESH_NAT);
      assert.equal(saveTable(ns, family, 'nft', 'filter'), FRESH_FILTER);
    }
    assert.equal(existsSync(host.bootScript), false);
  });

  test('a table changed between our save and our restore (the jump we delete by its text is gone) fails that transaction whole; the pass looks again and converges', (t) => {
    const { ns, host } = freshHost(t, 'txn');
    ns.restore('ipv4', 'nft', fixture('protected-default.ipv4.save'));
    ns.restore('ipv6', 'nft', fixture('protected-default.ipv6.save'));
    ipt(ns, 'ipv4', 'nft', 'nat', ['-I', 'PREROUTING', '1', '-d', '169.254.169.254/32', '-p', 'tcp', '-j', 'ACCEPT']);
    // The first restore finds someone else deleted our jump just before it ran.
    const marker = join(host.root, 'raced');
    host.stub('iptables-nft-restore', [
      `if [ ! -e '${marker}' ]; then : > '${marker}'; iptables-nft -t nat -D PREROUTING 2; fi`,
      `exec ${JSON.stringify(ns.check('sh', ['-c', 'command -v iptables-nft-restore']).trim())} "$@"`,
    ].join('\n'));
    const r = runCli(ns, host, ['apply', '--backend', 'nft', '--boot-script', 'never', '--log-level', 'silent', ...host.args]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(existsSync(marker));
    assert.equal(saveNatFilter(ns, 'ipv4', 'nft'), fixture('protected-default.ipv4.save').replace('-j IMDS-GUARD\n', '-j IMDS-GUARD\n-A PREROUTING -d 169.254.169.254/32 -p tcp -j ACCEPT\n'));
  });
});
