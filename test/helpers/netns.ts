import { type SpawnSyncOptions, spawnSync } from 'node:child_process';
import { basename } from 'node:path';

/**
 * Throwaway network namespaces for tests that touch iptables. Every iptables command a
 * test runs goes through `nsenter --net` into a namespace created here, so this
 * machine's own nat table is never read or written; each namespace is deleted when the
 * test ends, and any left over (a failed `after`, an interrupted run) when the process exits.
 */
export type Family = 'ipv4' | 'ipv6';
export type Backend = 'nft' | 'legacy';

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly input?: string;
  readonly cwd?: string;
  /** Run as this unprivileged uid/gid (65534 is nobody) after entering the namespace. */
  readonly uid?: number;
}

export interface Netns {
  readonly name: string;
  readonly path: string;
  /** Runs `file args` inside the namespace. Never throws on a non-zero exit. */
  run(file: string, args: readonly string[], opts?: RunOptions): RunResult;
  /** Runs `file args` inside the namespace and throws with its stderr unless it exits 0. */
  check(file: string, args: readonly string[], opts?: RunOptions): string;
  /** `iptables -t nat ARGS` (or ip6tables) of one backend, inside the namespace; throws on failure. */
  nat(family: Family, backend: Backend, args: readonly string[]): void;
  /** `iptables-restore --noflush` of one backend with `payload`, inside the namespace; throws on failure. */
  restore(family: Family, backend: Backend, payload: string): void;
  /** `iptables-save -t nat` without its `#` lines: the text a byte-for-byte comparison uses. */
  saveNat(family: Family, backend: Backend): string;
  /** The `-A ...` lines of saveNat. */
  natRules(family: Family, backend: Backend): string[];
  destroy(): void;
}

/** What saveNat returns in a namespace nobody has touched, either family and backend. */
export const FRESH_NAT = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
`;

const live = new Set<string>();
let counter = 0;

function deleteNetns(name: string): void {
  spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
  live.delete(name);
}

function deleteAll(): void {
  for (const name of [...live]) deleteNetns(name);
}

process.once('exit', deleteAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    deleteAll();
    process.exit(130);
  });
}

const tool = (family: Family, backend: Backend, verb: '' | '-save' | '-restore'): string =>
  `${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${backend}${verb}`;

/** Creates `igt-<tag>-<pid>-<n>`, unique per test file and process. */
export function createNetns(tag: string): Netns {
  const name = `igt-${basename(tag).replace(/\.test\.ts$/, '').replace(/[^A-Za-z0-9-]/g, '-').slice(0, 20)}-${process.pid}-${++counter}`;
  const add = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (add.status !== 0) throw new Error(`ip netns add ${name} failed: ${add.stderr}`);
  live.add(name);
  const path = `/run/netns/${name}`;

  const run = (file: string, args: readonly string[], opts: RunOptions = {}): RunResult => {
    const drop = opts.uid === undefined ? [] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups'];
    const options: SpawnSyncOptions = { encoding: 'utf8', env: opts.env ?? process.env, input: opts.input ?? '', cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024, timeout: 60_000 };
    const r = spawnSync('nsenter', [`--net=${path}`, ...drop, file, ...args], options);
    if (r.error) throw r.error;
    return { code: r.status ?? 128, stdout: String(r.stdout), stderr: String(r.stderr) };
  };
  const check = (file: string, args: readonly string[], opts: RunOptions = {}): string => {
    const r = run(file, args, opts);
    if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${r.code} in ${name}: ${r.stderr}`);
    return r.stdout;
  };
  const saveNat = (family: Family, backend: Backend): string =>
    check(tool(family, backend, '-save'), ['-t', 'nat']).split('\n').filter((l) => !l.startsWith('#')).join('\n');

  return {
    name,
    path,
    run,
    check,
    nat: (family, backend, args) => void check(tool(family, backend, ''), ['-t', 'nat', ...args]),
    restore: (family, backend, payload) => void check(tool(family, backend, '-restore'), ['--noflush'], { input: payload }),
    saveNat,
    natRules: (family, backend) => saveNat(family, backend).split('\n').filter((l) => l.startsWith('-A ')),
    destroy: () => deleteNetns(name),
  };
}

/** Names of the namespaces this process created and has not deleted yet. */
export function liveNetns(): string[] {
  return [...live];
}
