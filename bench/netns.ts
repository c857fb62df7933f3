import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { type Completed, type SpawnOptions, runTimed } from './proc.js';

/**
 * Throwaway network namespaces: every iptables process the bench starts runs through
 * `nsenter --net=/run/netns/NAME`, so this machine's own nat table is never read or
 * written. nsenter refuses to run when the namespace file is gone, so a deleted
 * namespace can never fall back to the host's. Namespaces are deleted by `destroy`,
 * on process exit, on SIGINT/SIGTERM/SIGHUP, and (if a previous run was SIGKILLed)
 * at the next start.
 */
export interface BenchNetns {
  readonly name: string;
  readonly path: string;
  /** Runs `file args` inside the namespace and times it. Never throws on a non-zero exit. */
  run(file: string, args: readonly string[], opts?: SpawnOptions): Promise<Completed>;
  destroy(): void;
}

const PREFIX = 'igbench';
const live = new Set<string>();
let counter = 0;
let handlersInstalled = false;

function deleteNetns(name: string): void {
  spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
  live.delete(name);
}

export function destroyAllNetns(): void {
  for (const name of [...live]) deleteNetns(name);
}

function installCleanup(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.once('exit', destroyAllNetns);
  const signals = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
  for (const [signal, code] of Object.entries(signals)) {
    process.once(signal, () => {
      destroyAllNetns();
      process.exit(code);
    });
  }
}

/** Deletes `igbench-<pid>-*` namespaces whose process is gone (a run killed with SIGKILL). */
export function removeStaleNetns(): string[] {
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  const removed: string[] = [];
  for (const line of String(list.stdout ?? '').split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = new RegExp(`^${PREFIX}-(\\d+)-`).exec(name);
    if (m === null || Number(m[1]) === process.pid || existsSync(`/proc/${m[1]}`)) continue;
    deleteNetns(name);
    removed.push(name);
  }
  return removed;
}

export function createNetns(tag: string): BenchNetns {
  installCleanup();
  const name = `${PREFIX}-${process.pid}-${++counter}-${tag.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 16)}`;
  const add = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (add.status !== 0) throw new Error(`ip netns add ${name} failed: ${add.stderr}`);
  live.add(name);
  const path = `/run/netns/${name}`;
  return {
    name,
    path,
    run: (file, args, opts = {}) => {
      if (!live.has(name)) return Promise.reject(new Error(`namespace ${name} was already deleted`));
      return runTimed('nsenter', [`--net=${path}`, file, ...args], opts);
    },
    destroy: () => deleteNetns(name),
  };
}
