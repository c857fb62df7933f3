import { mkdir, readFile, stat, statfs } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { type CgroupPath, type CgroupRead, cgroup2MountPoint, cgroup2MountRoot, mountRootProblem, parseProcCgroup, v2HierarchyUnder } from '../core/cgroup.js';
import type { Backend, Family } from '../core/family.js';
import { CommandError, FileError } from '../errors.js';
import { type RunProcess, firstLine } from './exec.js';

/** The cgroup v2 hierarchy as the host-network coverage needs it. Paths are CgroupPaths: validated, never `..`. */
export interface CgroupPort {
  /** Where the cgroup v2 hierarchy is, and whether our rules can name its cgroups; read once. */
  hierarchy(): Promise<CgroupHierarchy>;
  /** The inode of the cgroup's directory (its cgroup id), or null if it does not exist or there is no v2 hierarchy. */
  inode(path: CgroupPath): Promise<number | null>;
  /**
   * Creates the cgroup (and its missing ancestors) unless it exists, e.g. cgroupfs `/docker`
   * before Docker's first container, so a parent rule can be inserted at once. True if it exists afterwards.
   */
  ensureDir(path: CgroupPath): Promise<boolean>;
  /** parseProcCgroup of /proc/<pid>/cgroup; null when the process is gone. */
  cgroupOfPid(pid: number): Promise<CgroupRead | null>;
  /** Whether iptables of this family and backend, and the kernel, take `-m cgroup --path`; changes no rule. */
  hasCgroupMatch(family: Family, backend: Backend): Promise<CgroupMatchProbe>;
}

export interface CgroupHierarchy {
  /**
   * The directory of the cgroup v2 hierarchy's root: the cgroup2 mount (/sys/fs/cgroup, or
   * /sys/fs/cgroup/unified on a hybrid host), or under the configured root (the host's tree
   * mounted into a container); null when there is none.
   */
  readonly root: string | null;
  /** Why host-network containers cannot be covered from here (no hierarchy, a private cgroup namespace), or null. */
  readonly problem: string | null;
}

export interface CgroupMatchProbe {
  readonly available: boolean;
  /** What the probe found, for the audit. */
  readonly why: string;
}

export interface CgroupOptions {
  readonly lockWaitSeconds: number;
  /**
   * The host's cgroup tree mounted somewhere else than /sys/fs/cgroup (a container's
   * /host/sys/fs/cgroup); null or absent: the cgroup2 mount in /proc/self/mountinfo.
   */
  readonly root?: string | null;
  /** /proc, replaceable in tests. */
  readonly proc?: string;
  /** statfs f_type of a path (null when it cannot be read), replaceable in tests. */
  readonly fsType?: (path: string) => Promise<number | null>;
}

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;
const gone = (e: unknown): boolean => ['ENOENT', 'ENOTDIR', 'ESRCH'].includes(errnoOf(e) ?? '');

const PROBE_CHAIN = 'IMDS-GUARD-PROBE';
// A chain that is declared and filled but, under --test, never committed.
const PROBE_PAYLOAD = `*filter\n:${PROBE_CHAIN} - [0:0]\n-A ${PROBE_CHAIN} -m cgroup --path / -j RETURN\nCOMMIT\n`;
// iptables-legacy-restore's RESOURCE_PROBLEM: it could not take the xtables lock.
const EXIT_RESOURCE = 4;

const statfsType = (path: string): Promise<number | null> => statfs(path).then((s) => s.type, () => null);

export function createCgroups(run: RunProcess, opts: CgroupOptions): CgroupPort {
  const proc = opts.proc ?? '/proc';
  const fsType = opts.fsType ?? statfsType;
  let found: Promise<CgroupHierarchy> | undefined;
  // Mounts and our cgroup namespace do not change under a running agent: look once.
  const hierarchy = (): Promise<CgroupHierarchy> => (found ??= findHierarchy(proc, opts.root ?? null, fsType));
  const dirOf = async (path: CgroupPath): Promise<string | null> => {
    const r = (await hierarchy()).root;
    return r === null ? null : join(r, path);
  };

  return {
    hierarchy,
    async inode(path) {
      const dir = await dirOf(path);
      if (dir === null) return null;
      try {
        const s = await stat(dir, { bigint: true });
        if (!s.isDirectory()) return null;
        if (s.ino > BigInt(Number.MAX_SAFE_INTEGER)) throw new FileError(`${dir}: inode ${s.ino} is past 2^53`);
        return Number(s.ino);
      } catch (e) {
        if (gone(e)) return null;
        throw e instanceof FileError ? e : new FileError(`cannot stat ${dir}: ${(e as Error).message}`);
      }
    },
    async ensureDir(path) {
      const dir = await dirOf(path);
      if (dir === null) return false;
      try {
        // The kernel populates the new directory with its control files; the mode is cgroupfs's.
        await mkdir(dir, { recursive: true });
        return true;
      } catch (e) {
        throw new FileError(`cannot create cgroup ${dir}: ${(e as Error).message}`);
      }
    },
    async cgroupOfPid(pid) {
      if (!Number.isSafeInteger(pid) || pid < 1) return null;
      try {
        return parseProcCgroup(await readFile(join(proc, String(pid), 'cgroup'), 'utf8'));
      } catch (e) {
        if (gone(e)) return null;
        throw new FileError(`cannot read ${join(proc, String(pid), 'cgroup')}: ${(e as Error).message}`);
      }
    },
    hasCgroupMatch: (family, backend) => probeCgroupMatch(run, proc, family, backend, opts.lockWaitSeconds),
  };
}

/**
 * The kernel resolves `-m cgroup --path` against the root of the inserting process's cgroup
 * namespace, and prints each cgroup mount's root relative to the same root: the hierarchy
 * our rules can name is a cgroup2 mount whose root reads `/`. Anything else (a private
 * cgroup namespace, a subtree) would make the paths read here name other cgroups there.
 */
async function findHierarchy(proc: string, configured: string | null, fsType: (path: string) => Promise<number | null>): Promise<CgroupHierarchy> {
  const mountinfo = await readFile(join(proc, 'self/mountinfo'), 'utf8').catch(() => '');
  if (configured === null) {
    const root = cgroup2MountPoint(mountinfo);
    if (root !== null) return { root, problem: null };
    // None at the hierarchy's root: one mounted from outside our namespace says why.
    const seen = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].map((p) => ({ p, r: cgroup2MountRoot(mountinfo, p) })).find((m) => m.r !== null);
    return { root: null, problem: seen === undefined ? 'the host has no cgroup v2 hierarchy (cgroup v1 only): the cgroup path match needs v2' : mountRootProblem(seen.p, seen.r) };
  }
  const base = resolve(configured);
  const under = v2HierarchyUnder(base, { root: await fsType(base), unified: await fsType(join(base, 'unified')) });
  if (under.path === null) return { root: null, problem: under.problem };
  return { root: under.path, problem: mountRootProblem(under.path, cgroup2MountRoot(mountinfo, under.path)) };
}

/**
 * Two steps, because neither alone answers (both verified with strace on iptables 1.8.9):
 * 1. `iptables-restore --test` of a rule using the match. It parses the payload and asks the
 *    kernel which revision of the match it has (nft: NFT_COMPAT GET; legacy:
 *    IPT_SO_GET_REVISION_MATCH, which also loads xt_cgroup if it is a module), but commits
 *    nothing: nft sends an empty batch, legacy never replaces the table. It fails (exit 2)
 *    when iptables has no such extension or option (seen: `-m cgroupx`, `--pathx`), which
 *    is also what a kernel with only revision 0 (no --path, Linux < 4.5) leads to (not seen
 *    here). It does NOT fail when the kernel lacks the match altogether (it warns and exits
 *    0; seen with -m ipvs, which this kernel lacks), nor for a path that does not exist.
 * 2. So the kernel's own list: /proc/net/ip{,6}_tables_matches names every registered
 *    xtables match, `cgroup` included once xt_cgroup is loaded or built in.
 * Changes nothing lasting with nft. With legacy, step 1 reads the filter table, which makes
 * the kernel instantiate an (empty) legacy filter table in the namespace if it had none:
 * probe only the backend Docker's rules are in, where that table exists already.
 */
async function probeCgroupMatch(run: RunProcess, proc: string, family: Family, backend: Backend, lockWait: number): Promise<CgroupMatchProbe> {
  const tool = `${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${backend}-restore`;
  const r = await run(tool, ['--test', '--noflush', '-w', String(lockWait)], { input: PROBE_PAYLOAD });
  if (backend === 'legacy' && r.code === EXIT_RESOURCE) {
    throw new CommandError(`${tool}: the xtables lock was held for ${lockWait}s; the cgroup match was not probed`, 'lock-held', tool, r.stderr);
  }
  if (r.code !== 0) return { available: false, why: `${tool} --test refused -m cgroup --path (exit ${r.code}): ${firstLine(r.stderr)}` };
  const list = join(proc, 'net', family === 'ipv4' ? 'ip_tables_matches' : 'ip6_tables_matches');
  let matches: string[];
  try {
    matches = (await readFile(list, 'utf8')).split('\n');
  } catch (e) {
    if (gone(e)) return { available: false, why: `${list} is missing: the kernel has no xtables` };
    throw new FileError(`cannot read ${list}: ${(e as Error).message}`);
  }
  if (!matches.includes('cgroup')) return { available: false, why: `the kernel has no cgroup match (not in ${list}; xt_cgroup not built)` };
  return { available: true, why: `${tool} takes -m cgroup --path and the kernel has xt_cgroup` };
}
