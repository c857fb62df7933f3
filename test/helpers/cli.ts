import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Netns, type RunOptions, type RunResult, createNetns } from './netns.js';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = join(REPO, 'dist', 'cli.js');

/** A saved iptables text from test/fixtures. */
export function fixture(name: string): string {
  return readFileSync(join(REPO, 'test', 'fixtures', name), 'utf8');
}

/** Our PREROUTING jump as iptables-save prints it. */
export const JUMP_LINE = '-A PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD';

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Builds dist/ when it is missing or older than src/, so the tests run the CLI as shipped. */
export function ensureBuilt(): void {
  const built = existsSync(CLI) ? statSync(CLI).mtimeMs : 0;
  if (built >= newestMtime(join(REPO, 'src'))) return;
  // As `npm run build` does: typecheck, then bundle (plain tsc would emit an unbundled dist/).
  for (const args of [[join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json', '--noEmit'], [join(REPO, 'scripts', 'build.mjs')]]) {
    const r = spawnSync(process.execPath, args, { cwd: REPO, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${args.join(' ')} failed:\n${r.stdout}${r.stderr}`);
  }
}

const RESTORE_TOOLS = ['iptables-nft-restore', 'iptables-legacy-restore', 'ip6tables-nft-restore', 'ip6tables-legacy-restore'];

/**
 * A host for the CLI: temp directories for the boot script, OpenRC and state, plus a
 * PATH shim that records every iptables-restore the CLI runs (tool name and payload)
 * before handing it to the real binary, so a test can prove "nothing written".
 */
export interface Host {
  readonly root: string;
  readonly bootScriptDir: string;
  readonly bootScript: string;
  readonly openrcRoot: string;
  readonly stateDir: string;
  readonly shimDir: string;
  readonly restoreLog: string;
  /** CLI flags pointing everything at this host's directories, Docker off. */
  readonly args: readonly string[];
  /** The environment the CLI runs with: the shim first on PATH, no IMDS_GUARD_* from the caller. */
  readonly env: NodeJS.ProcessEnv;
  /** Restores recorded so far, oldest first. */
  restores(): { tool: string; payload: string }[];
  destroy(): void;
}

function realPath(name: string): string {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (dir !== '' && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`${name} not found on PATH`);
}

export function createHost(): Host {
  const root = mkdtempSync(join(tmpdir(), 'igt-host-'));
  chmodSync(root, 0o755); // the unprivileged-user test must be able to reach it
  const bootScriptDir = join(root, 'local.d');
  const shimDir = join(root, 'shim');
  const restoreLog = join(root, 'restores');
  mkdirSync(bootScriptDir);
  mkdirSync(shimDir);
  mkdirSync(restoreLog);
  for (const name of RESTORE_TOOLS) {
    const script = [
      '#!/bin/sh',
      `n=$(ls "${restoreLog}" | wc -l)`,
      `f="${restoreLog}/$(printf %04d "$n")-${name}"`,
      'cat > "$f"',
      `exec ${realPath(name)} "$@" < "$f"`,
      '',
    ].join('\n');
    writeFileSync(join(shimDir, name), script, { mode: 0o755 });
  }
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IMDS_GUARD_') && k !== 'DOCKER_HOST' && !k.startsWith('NODE_TEST')));
  env.PATH = `${shimDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`;
  const openrcRoot = join(root, 'runlevels');
  const stateDir = join(root, 'state');
  return {
    root,
    bootScriptDir,
    bootScript: join(bootScriptDir, 'imds-guard.start'),
    openrcRoot,
    stateDir,
    shimDir,
    restoreLog,
    args: ['--no-docker', '--boot-script-dir', bootScriptDir, '--openrc-root', openrcRoot, '--state-dir', stateDir],
    env,
    restores: () => readdirSync(restoreLog).sort().map((f) => ({ tool: f.replace(/^\d+-/, ''), payload: readFileSync(join(restoreLog, f), 'utf8') })),
    destroy: () => rmSync(root, { recursive: true, force: true }),
  };
}

export interface CliOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly uid?: number;
  readonly input?: string;
}

/** Runs `node dist/cli.js ARGS` inside the namespace with the host's environment. */
export function runCli(ns: Netns, host: Host, args: readonly string[], opts: CliOptions = {}): RunResult {
  const run: RunOptions = { env: { ...host.env, ...opts.env }, cwd: host.root, ...(opts.uid === undefined ? {} : { uid: opts.uid }), ...(opts.input === undefined ? {} : { input: opts.input }) };
  return ns.run(process.execPath, [CLI, ...args], run);
}

/** A namespace and a host for one test, both gone when the test ends (pass or fail). */
export function freshHost(t: { after(fn: () => void): void }, tag: string): { ns: Netns; host: Host } {
  const ns = createNetns(tag);
  t.after(() => ns.destroy());
  const host = createHost();
  t.after(() => host.destroy());
  return { ns, host };
}

/** The findings of an `audit --format json` run. */
export interface AuditJson {
  readonly protected: boolean;
  readonly backend: string;
  readonly findings: readonly { id: string; kind: string; status: string; family?: string; backend?: string; evidence: string[]; remediation?: string }[];
}

export function parseAudit(r: RunResult): AuditJson {
  try {
    return JSON.parse(r.stdout) as AuditJson;
  } catch {
    throw new Error(`audit did not print JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

/** Kinds of the failing findings, sorted, e.g. ["jump-not-first", "foreign-undermining"]. */
export function failingKinds(a: AuditJson): string[] {
  return a.findings.filter((f) => f.status === 'fail').map((f) => `${f.family ?? '-'} ${f.kind}`).sort();
}
