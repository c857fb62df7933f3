import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: readonly string[], timeoutMs = 60_000): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error ? String(r.error) : '') };
}

export function commandExists(name: string): boolean {
  return run('sh', ['-c', `command -v ${name}`]).status === 0;
}

/**
 * The agent the service tests run: IMDS_GUARD_BIN (a package's dist/cli.js, or any
 * executable), else this checkout's built dist/cli.js, else the test stand-in.
 * A directory means a package (package.json, dist/, node_modules/).
 */
export function agentUnderTest(): { path: string; label: string } {
  const packageOf = (cli: string): string | null => {
    const pkg = resolve(dirname(cli), '..');
    return basename(dirname(cli)) === 'dist' && existsSync(join(pkg, 'package.json')) && existsSync(join(pkg, 'node_modules')) ? pkg : null;
  };
  const bin = process.env.IMDS_GUARD_BIN;
  if (bin !== undefined && bin !== '') {
    const cli = realpathSync(bin);
    return { path: packageOf(cli) ?? cli, label: `IMDS_GUARD_BIN=${bin}` };
  }
  const built = join(REPO, 'dist/cli.js');
  if (existsSync(built) && packageOf(built) !== null) return { path: REPO, label: 'the built dist/cli.js' };
  return { path: join(REPO, 'test/packaging/fixtures/imds-guard-stand-in'), label: 'the test stand-in (no dist/cli.js built)' };
}
