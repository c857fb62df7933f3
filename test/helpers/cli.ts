import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Backend, type Family, type Netns, type RunOptions, type RunResult, createNetns } from './netns.js';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = join(REPO, 'dist', 'cli.js');
/**
 * The command as installed (package.json's bin): a launcher that starts the one-shot verbs
 * from the CLI's start-up snapshot (dist/cli.blob) and anything else from dist/cli.js.
 */
export const COMMAND = join(REPO, 'dist', 'imds-guard');

/** A saved iptables text from test/fixtures. */
export function fixture(name: string): string {
  return readFileSync(join(REPO, 'test', 'fixtures', name), 'utf8');
}

/** Our jumps as iptables-save prints them: nat PREROUTING, filter FORWARD (backstop), filter OUTPUT (host-network). */
export const JUMP_LINE = '-A PREROUTING -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD';
export const FWD_JUMP_LINE = '-A FORWARD -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD-FWD';
export const OUT_JUMP_LINE = '-A OUTPUT -m comment --comment "imds-guard: metadata endpoint protection" -j IMDS-GUARD-OUT';

/** What `saveTable(ns, f, b, 'filter')` returns in a namespace nobody has touched. */
export const FRESH_FILTER = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
`;

export type TableName = 'nat' | 'filter' | 'raw';

/** The iptables tool of one family and backend: tool('ipv6', 'legacy', '-save') is ip6tables-legacy-save. */
export const tool = (family: Family, backend: Backend, verb: '' | '-save' | '-restore' = ''): string =>
  `${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${backend}${verb}`;

/** `iptables-save -t TABLE` of one family and backend without its `#` lines: what a byte-for-byte comparison uses. */
export function saveTable(ns: Netns, family: Family, backend: Backend, table: TableName): string {
  return ns.check(tool(family, backend, '-save'), ['-t', table]).split('\n').filter((l) => !l.startsWith('#')).join('\n');
}

/** The nat section, then the filter section (a fixed order: legacy saves tables in the order they were loaded). */
export function saveNatFilter(ns: Netns, family: Family, backend: Backend): string {
  return saveTable(ns, family, backend, 'nat') + saveTable(ns, family, backend, 'filter');
}

/** The `-A ...` lines of one table. */
export function tableRules(ns: Netns, family: Family, backend: Backend, table: TableName): string[] {
  return saveTable(ns, family, backend, table).split('\n').filter((l) => l.startsWith('-A '));
}

/** `iptables -t TABLE ARGS` of one family and backend inside the namespace; throws on failure. */
export function ipt(ns: Netns, family: Family, backend: Backend, table: TableName, args: readonly string[]): void {
  ns.check(tool(family, backend), ['-t', table, ...args]);
}

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
 * before handing it to the real binary, so a test can prove "nothing written" (a `--test`
 * run, which commits nothing, is passed through unrecorded).
 */
export interface Host {
  readonly root: string;
  readonly bootScriptDir: string;
  readonly bootScript: string;
  readonly openrcRoot: string;
  readonly stateDir: string;
  readonly shimDir: string;
  readonly restoreLog: string;
  /**
   * CLI flags pointing everything at this host's directories, Docker off, host-network
   * coverage off. Without Docker the container parent defaults to /docker when that cgroup
   * exists on the machine, which would make the filter OUTPUT chain depend on the machine;
   * tests of OUTPUT use baseArgs with an explicit --cgroup-parent of a throwaway cgroup.
   */
  readonly args: readonly string[];
  /** args without --no-host-network. */
  readonly baseArgs: readonly string[];
  /** The environment the CLI runs with: the shim first on PATH, no IMDS_GUARD_* from the caller. */
  readonly env: NodeJS.ProcessEnv;
  /** Restores recorded so far, oldest first. */
  restores(): { tool: string; payload: string }[];
  /**
   * Puts an executable `name` with this shell body first on the CLI's PATH, in place of the
   * real tool (or of its recording shim): a tool that fails, for fail-closed tests.
   */
  stub(name: string, body: string): void;
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
    // `--test` runs (the cgroup match probe) parse a payload and commit nothing: not a write.
    const script = [
      '#!/bin/sh',
      `case " $* " in *" --test "*) exec ${realPath(name)} "$@" ;; esac`,
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
  const baseArgs = ['--no-docker', '--boot-script-dir', bootScriptDir, '--openrc-root', openrcRoot, '--state-dir', stateDir];
  return {
    root,
    bootScriptDir,
    bootScript: join(bootScriptDir, 'imds-guard.start'),
    openrcRoot,
    stateDir,
    shimDir,
    restoreLog,
    args: [...baseArgs, '--no-host-network'],
    baseArgs,
    env,
    restores: () => readdirSync(restoreLog).sort().map((f) => ({ tool: f.replace(/^\d+-/, ''), payload: readFileSync(join(restoreLog, f), 'utf8') })),
    stub: (name, body) => writeFileSync(join(shimDir, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 }),
    destroy: () => rmSync(root, { recursive: true, force: true }),
  };
}

export interface CliOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly uid?: number;
  readonly input?: string;
}

/**
 * Runs `imds-guard ARGS` (dist/imds-guard, as an operator does: the one-shot verbs from the
 * snapshot) inside the namespace with the host's environment.
 */
export function runCli(ns: Netns, host: Host, args: readonly string[], opts: CliOptions = {}): RunResult {
  const run: RunOptions = { env: { ...host.env, ...opts.env }, cwd: host.root, ...(opts.uid === undefined ? {} : { uid: opts.uid }), ...(opts.input === undefined ? {} : { input: opts.input }) };
  return ns.run(COMMAND, args, run);
}

/** A namespace and a host for one test, both gone when the test ends (pass or fail). */
export function freshHost(t: { after(fn: () => void): void }, tag: string): { ns: Netns; host: Host } {
  const ns = createNetns(tag);
  t.after(() => ns.destroy());
  const host = createHost();
  t.after(() => host.destroy());
  return { ns, host };
}

export interface FindingJson {
  readonly id: string;
  readonly kind: string;
  readonly status: string;
  readonly severity: string;
  readonly message: string;
  readonly family?: string;
  readonly backend?: string;
  readonly table?: string;
  readonly chain?: string;
  readonly interface?: string;
  readonly endpoint?: string;
  readonly evidence: string[];
  readonly remediation?: string;
}

/** An `audit --format json` report (README: schemaVersion 1). */
export interface AuditJson {
  readonly schemaVersion: number;
  readonly protected: boolean;
  readonly backend: string;
  readonly endpoints: { readonly list: string[]; readonly chosen: string; readonly cloud: string | null; readonly reason: string };
  readonly allow: string[];
  readonly networks: unknown[];
  readonly summary: Record<'pass' | 'fail' | 'warn' | 'info', number>;
  readonly findings: readonly FindingJson[];
}

export function parseAudit(r: RunResult): AuditJson {
  try {
    return JSON.parse(r.stdout) as AuditJson;
  } catch {
    throw new Error(`audit did not print JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

/** The failing findings as sorted "family table/chain kind" lines, e.g. "ipv4 nat/PREROUTING jump-missing". */
export function failingKinds(a: AuditJson): string[] {
  return a.findings.filter((f) => f.status === 'fail').map((f) => `${f.family ?? '-'} ${f.table ?? '-'}/${f.chain ?? '-'} ${f.kind}`).sort();
}
