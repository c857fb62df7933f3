import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { type FileHandle, open, readFile, stat } from 'node:fs/promises';
import { ipVersion } from '../core/ip.js';
import { fileURLToPath } from 'node:url';
import * as z from 'zod';
import type { Endpoint } from '../core/endpoint.js';
import type { ProbeOutcome, ProbeTarget } from '../core/probe-report.js';

/**
 * `audit --probe` from where a container stands. Node cannot setns(2), so each target
 * costs one child: `nsenter --net=/proc/self/fd/3 -- node probe-child.cjs SPEC`, where fd 3
 * is the container's namespace opened here (so a pid reused between the check and the
 * spawn cannot send the probe elsewhere). The child connects to every endpoint at once and
 * prints one JSON line each (src/shell/probe-child.ts). Nothing is changed in the
 * container; a host-network child joins the container's cgroup (v2) so the cgroup rule
 * applies to it, and leaves it when it exits. Never throws: a target that cannot be entered
 * yields `not-probed` outcomes with the reason.
 */
export interface ProbeOptions {
  /** Per connection, inside the child. */
  readonly timeoutMs: number;
  /** Aborting kills the child; its endpoints come back `not-probed`. */
  readonly signal?: AbortSignal;
  /** The child script; by default the probe-child.cjs shipped beside the bundle (see probeScriptCandidates). */
  readonly script?: string;
  /** nsenter (util-linux); found on PATH by default. */
  readonly nsenter?: string;
}

export type ProbeFn = (target: ProbeTarget, endpoints: readonly Endpoint[], opts: ProbeOptions) => Promise<ProbeOutcome[]>;

export const PROBE_SCRIPT = 'probe-child.cjs';
// A node start-up is ~40-80 ms on an idle host and several times that on a busy one;
// past this, on top of the connect timeout, the child is killed as stuck.
const CHILD_START_GRACE_MS = 3000;
const CONTAINER_ID = /^[0-9a-f]{12,64}$/;

/**
 * Where the child script may be, relative to the module running this code: beside it
 * (dist/cli.js) or one level up (a lazily loaded chunk in dist/chunks/).
 */
export function probeScriptCandidates(moduleUrl: string): string[] {
  return [new URL(`./${PROBE_SCRIPT}`, moduleUrl), new URL(`../${PROBE_SCRIPT}`, moduleUrl)].map((u) => fileURLToPath(u));
}

/** The cgroup2 mount point from /proc/self/mountinfo text: /sys/fs/cgroup on pure v2, /sys/fs/cgroup/unified on a hybrid host. */
export function cgroup2Root(mountinfo: string): string | null {
  const roots: string[] = [];
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ');
    const fstype = right?.split(' ')[0];
    const mountPoint = left?.split(' ')[4];
    // mountinfo escapes space, tab, newline and backslash as octal.
    if (fstype === 'cgroup2' && mountPoint !== undefined) roots.push(mountPoint.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return roots.find((r) => r === '/sys/fs/cgroup' || r === '/sys/fs/cgroup/unified') ?? roots[0] ?? null;
}

/** Why a cgroup path from /proc/PID/cgroup cannot be joined, or null. `/..` appears when we sit in another cgroup namespace. */
export function cgroupPathProblem(path: string): string | null {
  if (!path.startsWith('/') || path === '/') return `cgroup ${JSON.stringify(path)} is not a container's cgroup`;
  if (/[\0\n]/.test(path) || path.split('/').some((s) => s === '..' || s === '.')) return `cgroup ${JSON.stringify(path)} lies outside this process's cgroup namespace`;
  return null;
}

const ChildLine = z.union([
  z.object({ i: z.number().int().nonnegative(), result: z.enum(['refused', 'timeout', 'connected', 'error']), ms: z.number().nonnegative(), code: z.string().nullable() }),
  z.object({ fatal: z.string(), code: z.string() }),
]);

export const probeFromNamespace: ProbeFn = async (target, endpoints, opts) => {
  const notProbed = (reason: string): ProbeOutcome[] => endpoints.map((endpoint) => ({ ...where(target, endpoint), result: 'not-probed', reason }));
  const refusal = targetProblem(target, endpoints);
  if (refusal !== null) return notProbed(refusal);
  const script = opts.script ?? probeScriptCandidates(import.meta.url).find((p) => existsSync(p));
  if (script === undefined || !existsSync(script)) return notProbed(`the probe script ${PROBE_SCRIPT} is missing beside imds-guard's bundle (npm run build ships it in dist/)`);
  const cgroup = target.hostNetwork ? await cgroupOf(target) : null;
  if (typeof cgroup === 'string') return notProbed(cgroup);

  const { pid } = target.container;
  let ns: FileHandle;
  try {
    ns = await open(`/proc/${pid}/ns/net`, 'r');
  } catch (e) {
    return notProbed(openProblem(pid, e));
  }
  try {
    // Opened first, checked second: if the pid now names another process, this fails.
    const owner = await readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '');
    if (!owner.includes(target.container.id)) return notProbed(`process ${pid} is not (or no longer) in container ${target.container.name}: it stopped or restarted`);
    const spec = { timeoutMs: Math.max(1, Math.round(opts.timeoutMs)), netnsIno: (await ns.stat()).ino, cgroup, endpoints: endpoints.map((e) => ({ family: e.family, address: e.address, port: e.port })) };
    return await runChild(target, endpoints, ns.fd, script, spec, opts);
  } finally {
    await ns.close();
  }
};

function where(target: ProbeTarget, endpoint: Endpoint): Pick<ProbeOutcome, 'network' | 'container' | 'hostNetwork' | 'endpoint'> {
  return { network: target.network, container: target.container, hostNetwork: target.hostNetwork, endpoint };
}

function targetProblem(target: ProbeTarget, endpoints: readonly Endpoint[]): string | null {
  const { pid, id } = target.container;
  if (!Number.isInteger(pid) || pid <= 1) return `container ${target.container.name} has no usable pid (${pid})`;
  if (!CONTAINER_ID.test(id)) return `container id ${JSON.stringify(id)} is not a Docker id`;
  const bad = endpoints.find((e) => ipVersion(e.address) !== (e.family === 'ipv4' ? 4 : 6) || !Number.isInteger(e.port) || e.port < 1 || e.port > 65535);
  return bad === undefined ? null : `endpoint ${JSON.stringify(bad)} is not an address and port`;
}

function openProblem(pid: number, e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return existsSync(`/proc/${pid}`) ? `/proc/${pid}/ns/net is missing: this kernel has no network namespaces to enter` : `process ${pid} is gone (the container stopped)`;
  if (code === 'EACCES' || code === 'EPERM') return `permission denied opening /proc/${pid}/ns/net: the probe needs root (CAP_SYS_ADMIN and CAP_SYS_PTRACE)`;
  return `cannot open /proc/${pid}/ns/net (${code ?? 'unknown error'})`;
}

/** The cgroup.procs the child must join, or why it cannot. */
async function cgroupOf(target: ProbeTarget): Promise<{ procs: string; path: string } | string> {
  const path = target.cgroup;
  if (path === null) return `host-network container ${target.container.name}: its cgroup is unknown, and without it the cgroup rule cannot be tested`;
  const problem = cgroupPathProblem(path);
  if (problem !== null) return problem;
  const root = cgroup2Root(await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
  if (root === null) return 'no cgroup2 hierarchy is mounted: the cgroup rule of a host-network container cannot be tested';
  const procs = `${root}${path}/cgroup.procs`;
  try {
    await stat(procs);
  } catch {
    return `cgroup ${path} of container ${target.container.name} does not exist under ${root} (the container stopped?)`;
  }
  return { procs, path };
}

const FATAL: Record<string, string> = {
  netns: 'the probe did not land in the container\'s network namespace',
  cgroup: 'the probe could not join the container\'s cgroup',
  spec: 'the probe refused its arguments',
};

function runChild(target: ProbeTarget, endpoints: readonly Endpoint[], nsFd: number, script: string, spec: object, opts: ProbeOptions): Promise<ProbeOutcome[]> {
  return new Promise((resolve) => {
    const notProbed = (reason: string): ProbeOutcome[] => endpoints.map((endpoint) => ({ ...where(target, endpoint), result: 'not-probed', reason }));
    if (opts.signal?.aborted) return resolve(notProbed('the probe time budget ran out before this network'));
    // No shell, and a bare environment: NODE_OPTIONS and friends must not reach the child.
    const child = spawn(opts.nsenter ?? 'nsenter', ['--net=/proc/self/fd/3', '--', process.execPath, script, JSON.stringify(spec)], {
      stdio: ['ignore', 'pipe', 'pipe', nsFd],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
    });
    let stopped: string | null = null;
    const stop = (why: string): void => {
      stopped ??= why;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => stop(`the probe child did not finish within ${opts.timeoutMs + CHILD_START_GRACE_MS} ms`), opts.timeoutMs + CHILD_START_GRACE_MS);
    const onAbort = (): void => stop('the probe time budget ran out during this network');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    let spawnError: string | null = null;
    child.on('error', (e: NodeJS.ErrnoException) => {
      spawnError = e.code === 'ENOENT' ? 'nsenter is not installed (Debian/Alpine package util-linux / util-linux-misc)' : `nsenter could not start (${e.code ?? e.message})`;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      const lines = Buffer.concat(out).toString('utf8').split('\n').filter((l) => l !== '');
      const results = new Map<number, ProbeOutcome>();
      let fatal: string | null = null;
      for (const line of lines) {
        const parsed = ChildLine.safeParse(safeJson(line));
        if (!parsed.success) continue;
        const p = parsed.data;
        if ('fatal' in p) fatal = `${FATAL[p.fatal] ?? p.fatal} (${p.code})`;
        else {
          const endpoint = endpoints[p.i];
          if (endpoint !== undefined) results.set(p.i, { ...where(target, endpoint), result: p.result, ms: p.ms, code: p.code });
        }
      }
      // What the child said, else why it said nothing. nsenter's own complaint (it exits 1
      // when setns is refused) is quoted, not interpreted.
      const firstErr = Buffer.concat(err).toString('utf8').split('\n').find((l) => l.trim() !== '')?.trim();
      const why = fatal ?? stopped ?? spawnError ?? silenceOf(target.container.pid, code, signal, firstErr);
      resolve(endpoints.map((endpoint, i) => results.get(i) ?? { ...where(target, endpoint), result: 'not-probed', reason: why }));
    });
  });
}

/** Why a child that printed no fatal line left an endpoint unanswered. */
function silenceOf(pid: number, code: number | null, signal: NodeJS.Signals | null, stderr: string | undefined): string {
  if (signal !== null) return `the probe child was killed (${signal})`;
  if (code === 0 || code === 5) return 'the probe child gave no answer for this endpoint';
  return `could not enter the namespace of process ${pid}: nsenter exited ${code ?? '?'}${stderr ? `: ${stderr}` : ''}`;
}

function safeJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return null;
  }
}
