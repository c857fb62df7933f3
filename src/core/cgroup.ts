import type { Family } from './family.js';
import { OUTPUT_CHAIN, RULE_COMMENT_PREFIX } from './names.js';
import type { Observation } from './plan.js';

/**
 * cgroup v2 paths, as iptables' `-m cgroup --path P` takes them. Verified on kernel 6.18
 * with iptables 1.8.9, both backends, IPv4 and IPv6, REJECT --reject-with tcp-reset:
 * - P is relative to the root of the cgroup v2 hierarchy *of the inserting process's
 *   cgroup namespace*, wherever that hierarchy is mounted (/sys/fs/cgroup on a pure v2
 *   host, /sys/fs/cgroup/unified on a hybrid one). /proc/<pid>/cgroup's `0::` line is
 *   relative to the same root, and names a cgroup outside the reader's namespace with
 *   leading `/..` segments: such a path is refused here, never turned into a rule.
 * - It matches sockets created in P and in every descendant of P; a socket keeps the
 *   cgroup of the process that created it, so a process must be moved before it connects.
 * - P is resolved to a cgroup once, when the rule is inserted. A P that does not exist is
 *   refused (iptables-nft exits 4, "RULE_APPEND failed (Invalid argument)"; iptables-legacy
 *   exits 1, "Invalid argument"); iptables-restore fails the same way, but `--test` exits 0.
 *   A P removed and re-created afterwards silently matches nothing, and iptables-save
 *   still prints it: hence the directory's inode in the rule's comment (cgroupComment).
 * - iptables-save prints P as given (`-m cgroup --path "/docker"`, quoted because of the
 *   '/'), and the matches in the order given: `-d X/32 -p tcp -m tcp --dport 80 -m cgroup
 *   --path "/docker" -j REJECT --reject-with tcp-reset`, or `-p tcp -m cgroup --path ...
 *   -m tcp --dport 80` when the cgroup match came before --dport. `docker`, `/docker/` and
 *   `/docker//x` are all accepted and printed unchanged, so only the canonical form below
 *   is ever written, and a rule reads back the same.
 */
export type CgroupPath = string & { readonly __cgroupPath: unique symbol };

// Far below the kernel's XT_CGROUP_PATH_MAX (4096); a Docker cgroup is under 100 bytes and
// a Kubernetes pod's nested slices under 200. A longer one is not a container's.
const MAX_PATH = 1024;
// NAME_MAX: each segment is a directory name.
const MAX_SEGMENT = 255;
// Letters, digits and the punctuation systemd unit names and Docker ids use. The path goes
// into iptables-restore payloads and a boot script's quoted here-document: no quote,
// backslash, whitespace, '$' or glob character ever has to be escaped.
const SEGMENT = /^[A-Za-z0-9._@:+=,-]+$/;

/** Why `path` is not a canonical cgroup v2 path we would put in a rule, or null. */
export function cgroupPathProblem(path: string): string | null {
  if (path === '/') return null;
  if (path === '') return 'is empty';
  if (!path.startsWith('/')) return 'does not start with /';
  if (path.length > MAX_PATH) return `is longer than ${MAX_PATH} characters`;
  const segments = path.slice(1).split('/');
  for (const s of segments) {
    if (s === '') return 'has an empty segment (// or a trailing /)';
    if (s === '..') return 'has a .. segment (a cgroup outside our cgroup namespace: run with the host cgroup namespace)';
    if (s === '.') return 'has a . segment';
    if (s.length > MAX_SEGMENT) return `has a segment longer than ${MAX_SEGMENT} characters`;
    if (!SEGMENT.test(s)) return 'has a character other than letters, digits and . _ @ : + = , -';
  }
  return null;
}

export type CgroupRead = { readonly ok: true; readonly path: CgroupPath } | { readonly ok: false; readonly problem: string };

/** `path` checked once: a CgroupPath, or what is wrong with it, the path quoted (it is untrusted and goes into logs). */
export function readCgroupPath(path: string): CgroupRead {
  const problem = cgroupPathProblem(path);
  return problem === null ? { ok: true, path: path as CgroupPath } : { ok: false, problem: `cgroup ${JSON.stringify(path)} ${problem}` };
}

/** `path` as a CgroupPath, or null when cgroupPathProblem finds fault with it. */
export function toCgroupPath(path: string): CgroupPath | null {
  const r = readCgroupPath(path);
  return r.ok ? r.path : null;
}

/**
 * The cgroup v2 path in the text of /proc/<pid>/cgroup: its `0::PATH` line, which a hybrid
 * host has beside the v1 lines (`N:controllers:PATH`) and a pure v1 host lacks.
 */
export function parseProcCgroup(text: string): CgroupRead {
  const lines = text.split('\n').filter((l) => l.startsWith('0::'));
  if (lines.length === 0) return { ok: false, problem: 'has no cgroup v2 (0::) line: the host has no unified hierarchy' };
  if (lines.length > 1) return { ok: false, problem: 'has more than one cgroup v2 (0::) line' };
  return readCgroupPath(lines[0]!.slice(3));
}

/** Whether `path` is `parent` or one of its descendants, segment by segment ("/a" is not under "/ab"). */
export function isUnder(path: CgroupPath, parent: CgroupPath): boolean {
  return parent === '/' || path === parent || path.startsWith(`${parent}/`);
}

/**
 * Where the cgroup v2 hierarchy is mounted, from /proc/self/mountinfo: /sys/fs/cgroup on a
 * pure v2 host, /sys/fs/cgroup/unified on a hybrid one, null on a pure v1 host. Only a mount
 * of the hierarchy's root counts: under a bind mount of a subtree, a directory's path would
 * not be the path the kernel resolves `--path` against.
 */
export function cgroup2MountPoint(mountinfo: string): string | null {
  const mounts = cgroup2Mounts(mountinfo).filter((m) => m.root === '/').map((m) => m.point);
  return PREFERRED_MOUNTS.find((m) => mounts.includes(m)) ?? mounts[0] ?? null;
}

/**
 * The root field of the cgroup2 mount at `point` in /proc/self/mountinfo (the last mount
 * there wins, as it hides the others), or null when there is none. The kernel prints it
 * relative to the root of the reader's cgroup namespace: `/` for the hierarchy's root
 * seen from the host's namespace, `/../..` for the same mount seen from a private one
 * (both seen in the lab, dockerd 20.10, --cgroupns host and private).
 */
export function cgroup2MountRoot(mountinfo: string, point: string): string | null {
  return cgroup2Mounts(mountinfo).filter((m) => m.point === point).at(-1)?.root ?? null;
}

/** Why the cgroup2 mount at `point` (its root field `root`, cgroup2MountRoot) cannot be named by our rules, or null. */
export function mountRootProblem(point: string, root: string | null): string | null {
  if (root === '/') return null;
  if (root === null) return `there is no cgroup2 mount at ${point} in /proc/self/mountinfo: mount the host's /sys/fs/cgroup itself, not a link to it`;
  if (root === '/..' || root.startsWith('/../')) return privateNamespaceProblem(`the cgroup2 mount at ${point} shows its root as ${root}, above the root of ours`);
  return `the cgroup2 mount at ${point} is of the subtree ${root}, not of the hierarchy's root: mount the host's whole /sys/fs/cgroup`;
}

function cgroup2Mounts(mountinfo: string): { root: string; point: string }[] {
  const mounts: { root: string; point: string }[] = [];
  for (const line of mountinfo.split('\n')) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    const f = line.split(' ');
    const dash = f.indexOf('-', 6);
    if (dash < 0 || f[dash + 1] !== 'cgroup2') continue;
    mounts.push({ root: unescapeMountField(f[3]!), point: unescapeMountField(f[4]!) });
  }
  return mounts;
}

const PREFERRED_MOUNTS = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'];

// mountinfo writes space, tab, newline and backslash in paths as octal escapes (\040).
const unescapeMountField = (f: string): string => f.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

// ---------------------------------------------------------------- a cgroup tree mounted elsewhere

/** statfs f_type of a cgroup v2 mount (linux/magic.h). */
export const CGROUP2_SUPER_MAGIC = 0x63677270;

/**
 * Where the cgroup v2 hierarchy is under `root`, a copy of the host's cgroup tree mounted
 * where the agent can read it (a container's `/host/sys/fs/cgroup`): `root` itself on a
 * pure v2 host, `root/unified` on a hybrid one. Told by the filesystem type of each
 * (statfs; null when it could not be read), never by names: on a hybrid host `root` is a
 * tmpfs, on a v1-only host neither is cgroup2.
 */
export function v2HierarchyUnder(root: string, fsType: { readonly root: number | null; readonly unified: number | null }): { readonly path: string | null; readonly problem: string | null } {
  if (fsType.root === CGROUP2_SUPER_MAGIC) return { path: root, problem: null };
  const unified = `${root.replace(/\/+$/, '')}/unified`;
  if (fsType.unified === CGROUP2_SUPER_MAGIC) return { path: unified, problem: null };
  if (fsType.root === null) return { path: null, problem: `the cgroup root ${root} cannot be read: mount the host's /sys/fs/cgroup there` };
  return { path: null, problem: `neither ${root} nor ${unified} is a cgroup2 mount: the host has no cgroup v2 hierarchy (cgroup v1 only), or ${root} is not the host's /sys/fs/cgroup` };
}

/** A private cgroup namespace, `detail` saying how it was seen, and the fix. */
export function privateNamespaceProblem(detail: string): string {
  return `the agent is in a private cgroup namespace (${detail}), so its rules cannot name Docker's cgroups: run the agent in the host's cgroup namespace: as a systemd or OpenRC service, or as a container on a daemon with "default-cgroupns-mode": "host" (daemon.json; the default of cgroup v1 and hybrid hosts)`;
}

// ---------------------------------------------------------------- a container's cgroup by its id

const FULL_ID = /^[0-9a-f]{64}$/;
const SLICE_UNIT = /^[A-Za-z0-9:_.-]+\.slice$/;

/**
 * The cgroup path of a systemd slice unit: systemd nests a slice in the slices its name's
 * dash-separated prefixes name (`docker-ci.slice` is `/docker.slice/docker-ci.slice`), and
 * `-.slice` is the root. Null for a name that is not a slice, or has an empty component.
 */
export function slicePath(unit: string): CgroupPath | null {
  if (unit === '-.slice') return '/' as CgroupPath;
  if (!SLICE_UNIT.test(unit)) return null;
  const parts = unit.slice(0, -'.slice'.length).split('-');
  if (parts.some((p) => p === '')) return null;
  const nested = parts.map((_, i) => `${parts.slice(0, i + 1).join('-')}.slice`);
  return toCgroupPath(`/${nested.join('/')}`);
}

export interface ContainerCgroupFacts {
  /** Docker's full container id (64 hex digits); anything else gets no candidate. */
  readonly id: string;
  /** `docker info`'s cgroup driver: cgroupfs, systemd, or null when Docker did not say. */
  readonly driver: string | null;
  /** The container's HostConfig.CgroupParent: empty when it has none of its own. */
  readonly containerParent: string;
  /** The daemon's cgroup-parent as configured here (cgroupParent), or null for auto. */
  readonly daemonParent: string | null;
}

/**
 * Where Docker puts a container's cgroup, for when its processes are not visible to the
 * agent (a container without the host's pid namespace): cgroupfs `<parent>/<id>` (the
 * container's own parent, else the daemon's, else /docker), systemd `<slice>/docker-<id>.scope`
 * (the container's slice, else the daemon's parent, else system.slice). Both drivers' when
 * Docker did not say which. Every candidate is named after the id and validated; the caller
 * uses one only if it exists.
 */
export function containerCgroupCandidates(f: ContainerCgroupFacts): CgroupPath[] {
  if (!FULL_ID.test(f.id)) return [];
  const out: (CgroupPath | null)[] = [];
  const own = f.containerParent;
  if (f.driver !== 'systemd') {
    // runc takes a relative parent relative to its own cgroup, which is not known here: it
    // is tried at the root (where it is when the runtime runs in the root cgroup).
    const parent = own !== '' ? (own.startsWith('/') ? own : `/${own}`) : (f.daemonParent ?? '/docker');
    out.push(toCgroupPath(`${parent.replace(/\/+$/, '')}/${f.id}`));
  }
  if (f.driver === 'systemd' || f.driver === null) {
    const slice = own !== '' ? slicePath(own) : f.daemonParent !== null ? toCgroupPath(f.daemonParent) : ('/system.slice' as CgroupPath);
    if (slice !== null) out.push(toCgroupPath(`${slice === '/' ? '' : slice}/docker-${f.id}.scope`));
  }
  return [...new Set(out.filter((p): p is CgroupPath => p !== null))];
}

/** Whether some segment of `path` names the container (its cgroup, or one its processes made inside it). */
export function namesContainer(path: CgroupPath, id: string): boolean {
  return FULL_ID.test(id) && path.split('/').some((s) => s.includes(id));
}

/**
 * A host-network container's cgroup from what could be read. /proc/<pid>/cgroup is the
 * container's only when it names the container: in another pid namespace than Docker's,
 * the pid Docker gives is a different process here, or none. Else the candidate by id that
 * exists (`found`). Else what the pid gave, if anything: the coverage decides on it, and
 * gives no own rule to a cgroup not named after the container.
 */
export function pickContainerCgroup(id: string, fromPid: CgroupRead | null, found: CgroupPath | null): CgroupRead | null {
  if (fromPid?.ok === true && namesContainer(fromPid.path, id)) return fromPid;
  if (found !== null) return { ok: true, path: found };
  return fromPid;
}

// ---------------------------------------------------------------- rule identity

/** What a cgroup rule's comment records: its content id and the cgroup directory's inode. */
export interface CgroupCommentFacts {
  readonly id: string;
  readonly inode: number;
}

const ID = /^[0-9a-f]{12}$/;
// After RULE_COMMENT_PREFIX. 16 digits: inodes past 2^53 are refused below, not rounded.
const CGROUP_COMMENT_REST = /^([0-9a-f]{12}) cgino=([1-9][0-9]{0,15})$/;

/**
 * `imds-guard:<id> cgino=<inode>`. On cgroup v2 the inode is the cgroup's id, which the
 * kernel never reuses within a boot (verified: re-created, /imdsg-test went from 272 to
 * 310), so a rule whose inode is not the directory's names a cgroup that is gone, and
 * matches nothing. Read back from iptables-save, it needs no state file.
 */
export function cgroupComment(id: string, inode: number): string {
  if (!ID.test(id)) throw new RangeError(`rule id ${JSON.stringify(id)} is not 12 hex digits`);
  if (!Number.isSafeInteger(inode) || inode < 1) throw new RangeError(`inode ${inode} is not a positive integer`);
  return `${RULE_COMMENT_PREFIX}${id} cgino=${inode}`;
}

/** The facts in a comment read back from the table (untrusted), or null if it is not one of cgroupComment's. */
export function parseCgroupComment(text: string): CgroupCommentFacts | null {
  const m = text.startsWith(RULE_COMMENT_PREFIX) ? CGROUP_COMMENT_REST.exec(text.slice(RULE_COMMENT_PREFIX.length)) : null;
  if (m === null) return null;
  const inode = Number(m[2]);
  return Number.isSafeInteger(inode) ? { id: m[1]!, inode } : null;
}

/** The match of a cgroup rule. iptables-save prints matches in the order given: render them in that order. */
export function cgroupMatchArgs(path: CgroupPath): string[] {
  return ['-m', 'cgroup', '--path', path];
}

// ---------------------------------------------------------------- host-network containers

/** A running container that shares the host's network stack, as observed. */
export interface HostNetContainer {
  readonly id: string;
  readonly name: string;
  /**
   * What parseProcCgroup made of /proc/<pid>/cgroup (CgroupPort.cgroupOfPid), its problem
   * included for the audit, or the cgroup found by its id (pickContainerCgroup); null when
   * neither could be read (the container stopped, or its cgroup is not where Docker's driver puts it).
   */
  readonly cgroup: CgroupRead | null;
  readonly labels: Readonly<Record<string, string>>;
  /** For `--network container:X` where X is host-network: X; null for `--network host`. */
  readonly joinsHostVia: string | null;
}

export type Coverage = 'parent-rule' | 'own-rule' | 'exempt' | 'not-coverable';

export interface HostContainerCoverage {
  readonly id: string;
  readonly name: string;
  /**
   * The validated cgroup: the path of an own-rule, or of an exemption's return rule. Null
   * when unknown; an exempt container without one gets no return rule, so under the parent
   * it stays blocked (closed, never open by mistake).
   */
  readonly cgroup: CgroupPath | null;
  readonly joinsHostVia: string | null;
  readonly coverage: Coverage;
  /** Why, in words for the audit. */
  readonly reason: string;
}

export interface HostCoverageInput {
  readonly containers: readonly HostNetContainer[];
  /** Docker's container parent cgroup (cgroupfs `/docker`, a `cgroup-parent` slice), or null if it has none. */
  readonly parent: string | null;
  readonly parentExists: boolean;
  /** Container names exempted by configuration, with or without Docker's leading '/'. */
  readonly exemptNames: readonly string[];
  /** The kernel and iptables take `-m cgroup --path` (CgroupPort.hasCgroupMatch). */
  readonly cgroupMatch: boolean;
  /** The host has a cgroup v2 hierarchy (CgroupPort.hierarchy() has a root). */
  readonly cgroupV2: boolean;
  /**
   * Why the hierarchy cannot be used from here (CgroupPort.hierarchy().problem): there is
   * none, the configured root is not one, or our rules could not name its cgroups (a private
   * cgroup namespace, mountRootProblem); null when it can.
   */
  readonly hierarchyProblem: string | null;
}

export const ALLOW_LABEL = 'imds-guard.allow';

// Docker's full id (64 hex digits) or a prefix of it long enough to be unique in practice.
const DOCKER_ID = /^[0-9a-f]{12,64}$/;
const bareName = (name: string): string => name.replace(/^\//, '');

/**
 * How each host-network container is kept from the endpoints. Exemption comes first (it is
 * a decision, whatever the host can do); then what the host cannot do; then the parent rule
 * for containers under Docker's parent; else a rule for the container's own cgroup.
 */
export function hostContainerCoverage(input: HostCoverageInput): HostContainerCoverage[] {
  const exempt = new Set(input.exemptNames.map(bareName));
  const parent = input.parent === null ? null : toCgroupPath(input.parent);
  return input.containers.map((c) => {
    const read = c.cgroup;
    const cgroup = read?.ok === true ? read.path : null;
    const base = { id: c.id, name: bareName(c.name), cgroup, joinsHostVia: c.joinsHostVia };
    const via = c.joinsHostVia === null ? '' : ` (joins the host network through ${c.joinsHostVia})`;
    const out = (coverage: Coverage, reason: string): HostContainerCoverage => ({ ...base, coverage, reason: reason + via });

    if (c.labels[ALLOW_LABEL] === 'true') return out('exempt', `label ${ALLOW_LABEL}=true`);
    if (exempt.has(bareName(c.name))) return out('exempt', "named in the configuration's exemptions");
    if (input.hierarchyProblem !== null) return out('not-coverable', input.hierarchyProblem);
    if (!input.cgroupV2) return out('not-coverable', 'the host has no cgroup v2 hierarchy (cgroup v1 only): the cgroup path match needs v2');
    if (!input.cgroupMatch) return out('not-coverable', "iptables or the kernel lacks the cgroup path match (xt_cgroup, Linux 4.5+)");
    if (read === null) return out('not-coverable', "its cgroup could not be read (/proc/<pid>/cgroup), nor found by its id where Docker's cgroup driver puts it");
    if (!read.ok) return out('not-coverable', `/proc/<pid>/cgroup ${read.problem}`);
    const path = read.path;
    if (parent !== null && parent !== '/' && input.parentExists && isUnder(path, parent)) return out('parent-rule', `its cgroup is under ${parent}`);
    // A cgroup not named after the container could hold host processes too (the root, a
    // slice of services): an exact rule there would cut the host off.
    if (!DOCKER_ID.test(c.id) || !path.split('/').at(-1)!.includes(c.id)) return out('not-coverable', `its cgroup ${path} is not the container's own (its last segment does not name the container's id)`);
    return out('own-rule', `its cgroup is ${ownReason(input.parent, parent, input.parentExists)}`);
  });
}

function ownReason(given: string | null, parent: CgroupPath | null, exists: boolean): string {
  if (given === null) return "outside any parent: Docker has none (systemd driver without cgroup-parent)";
  if (parent === null || parent === '/') return `outside any parent: ${JSON.stringify(given)} cannot be a parent`;
  if (!exists) return `outside any parent: ${parent} does not exist`;
  return `outside ${parent} (a per-container --cgroup-parent)`;
}

/**
 * The family whose tables, as read, hold a rule of ours that uses the cgroup path match
 * (in IMDS-GUARD-OUT): proof that the kernel and iptables both take the match, since the
 * kernel refuses such a rule without xt_cgroup and iptables prints it only with its
 * extension. Null when no family shows one.
 */
export function cgroupRuleReadBack(obs: Pick<Observation, 'families'>): Family | null {
  for (const family of ['ipv4', 'ipv6'] as const) {
    const read = obs.families[family].ours;
    if (!read.ok) continue;
    const rules = read.tables.get('filter')?.lines.get(OUTPUT_CHAIN) ?? [];
    if (rules.some((r) => / -m cgroup --path \S/.test(` ${r}`))) return family;
  }
  return null;
}
