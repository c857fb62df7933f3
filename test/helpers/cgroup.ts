import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2MountPoint } from '../../src/core/cgroup.js';
import { type ProcResult, runProc } from './proc.js';

/**
 * Throwaway cgroups for tests of `-m cgroup --path`. cgroups are machine-wide, so each test
 * cgroup has a name of its own (`imdsg-test-<pid>-<n>`), only processes the test starts are
 * ever moved into it, and it is removed when the test ends or, at the latest, when the
 * process exits. rmdir only: the kernel refuses a cgroup that still holds a process.
 */
export interface TestCgroup {
  /** The cgroup2 mount point (/sys/fs/cgroup/unified here). */
  readonly mount: string;
  /** `/imdsg-test-<pid>-<n>`: what `--path` takes. */
  readonly path: string;
  /** `${path}/child`, created with it. */
  readonly child: string;
  /** The directory of a path of this cgroup's (path or child). */
  dirOf(path: string): string;
  inode(path: string): number;
  /**
   * Runs `file args` moved into cgroup `path` (or left in ours when null) before it starts:
   * a shell writes its own pid to cgroup.procs, then execs. A socket keeps the cgroup of the
   * process that created it, so the move must come first.
   */
  runIn(path: string | null, file: string, args: readonly string[], opts?: { timeoutMs?: number }): Promise<ProcResult>;
  /** rmdir child and parent, then mkdir them again: the same paths, new cgroups (new inodes). */
  recreate(): void;
  destroy(): void;
}

export function cgroup2Mount(): string | null {
  try {
    return cgroup2MountPoint(readFileSync('/proc/self/mountinfo', 'utf8'));
  } catch {
    return null;
  }
}

const live = new Set<string>();
let counter = 0;

function removeTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(dir, e.name));
  rmdirSync(dir);
}

process.once('exit', () => {
  for (const dir of live) {
    try {
      removeTree(dir);
    } catch {
      // still in use: nothing more we may do; never kill what is in it
    }
  }
});

export function createTestCgroup(): TestCgroup {
  const mount = cgroup2Mount();
  if (mount === null) throw new Error('no cgroup2 hierarchy is mounted');
  const path = `/imdsg-test-${process.pid}-${++counter}`;
  const child = `${path}/child`;
  const dirOf = (p: string): string => {
    if (p !== path && p !== child) throw new Error(`${p} is not this test's cgroup`);
    return join(mount, p);
  };
  const make = (): void => void mkdirSync(dirOf(child), { recursive: true });
  live.add(dirOf(path));
  make();
  return {
    mount,
    path,
    child,
    dirOf,
    inode: (p) => statSync(dirOf(p)).ino,
    runIn: (p, file, args, o = {}) => {
      const procs = p === null ? '' : join(dirOf(p), 'cgroup.procs');
      return runProc('sh', ['-c', 'if [ -n "$0" ]; then echo $$ > "$0" || exit 125; fi; exec "$@"', procs, file, ...args], { timeoutMs: o.timeoutMs ?? 30_000 });
    },
    recreate: () => {
      removeTree(dirOf(path));
      make();
    },
    destroy: () => {
      removeTree(dirOf(path));
      live.delete(dirOf(path));
    },
  };
}
