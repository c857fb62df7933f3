import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before } from 'node:test';
import { CLI, COMMAND, ensureBuilt } from './cli.js';
import { type Lab, labAvailable, startLab } from './lab.js';
import { type Netns, createNetns } from './netns.js';
import { type ProcResult, runProc } from './proc.js';
import type { AuditReport } from '../../src/core/report.js';

/**
 * `imds-guard run` as a child process inside a lab's Docker host namespace
 * (`nsenter --net=/run/netns/<lab.netns> node dist/cli.js run ...`), with its JSON log
 * lines parsed as they arrive and its state file at hand. nsenter execs node, so the
 * child's pid is the agent's own: signals and /proc/<pid> reach the agent itself.
 */

/** The image every lab imports (static busybox only). */
export const LAB_IMAGE = 'imdsg-busybox:latest';
/** The fake server's AccessKeyId (scripts/lab); no real credential looks like this. */
export const CRED_MARKER = 'ASIALABFAKE';
export const MD_ADDR = '169.254.169.254';
/** The lab's IPv6 metadata address (the default IPv6 endpoint, served by the lab where the kernel has IPv6). */
export const MD_ADDR6 = 'fd00:ec2::254';
const CRED_PATH = '/latest/meta-data/iam/security-credentials/lab-role';
/** What a container sends to ask for the role's credentials; HTTP/1.0 makes busybox httpd close after the answer. */
export const CRED_REQUEST = `GET ${CRED_PATH} HTTP/1.0\\r\\nHost: ${MD_ADDR}\\r\\n\\r\\n`;

/** One pino line of the agent's stdout, and when this process read it. */
export interface LogLine {
  readonly event?: string;
  readonly msg?: string;
  readonly level?: number;
  /** The agent's own timestamp (ISO, ms). */
  readonly time?: string;
  readonly [key: string]: unknown;
}

export interface AgentFiles {
  readonly stateDir: string;
  readonly bootScriptDir: string;
  readonly bootScript: string;
  readonly openrcRoot: string;
}

export interface AgentOptions {
  /** Directory for the state file, boot script and runlevels (default: the lab's directory). */
  readonly root?: string;
  /** Cron expression of the drift check (default every second: tests should not wait 30 s); null: no flag, the config file decides. */
  readonly driftSchedule?: string | null;
  /** Default debug, so converged passes show up as `reconciled` lines. */
  readonly logLevel?: 'debug' | 'info';
  /** `--config FILE` (for SIGHUP reloads); flags given here still win over it. */
  readonly configFile?: string;
  readonly extraArgs?: readonly string[];
  /** Added to the agent's environment (e.g. a PATH with shims first). */
  readonly env?: NodeJS.ProcessEnv;
  /** Wait until the first pass is recorded and (on a lab) Docker's event stream is connected (default true). */
  readonly waitReady?: boolean;
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** performance.now() when the child exited. */
  readonly at: number;
}

export interface Agent {
  readonly pid: number;
  readonly files: AgentFiles;
  /** Flags that point another command (audit, remove) at the same lab, directories and policy. */
  readonly hostArgs: readonly string[];
  /** Log lines read so far, oldest first. */
  lines(): readonly LogLine[];
  /** The number of lines read so far: pass it as `from` to look only at what comes next. */
  mark(): number;
  /** Lines with `event === name` (from `from` on). */
  events(name: string, from?: number): LogLine[];
  /** Resolves with the first line from `from` on that `match` accepts; rejects after `timeoutMs` or when the agent exits. */
  waitFor(what: string, match: (l: LogLine) => boolean, opts?: { from?: number; timeoutMs?: number }): Promise<LogLine>;
  /** The agent's state file, or null while there is none. */
  state(): AgentStateFile | null;
  /** Resident memory of the agent process, in KiB (VmRSS). */
  rssKb(): number;
  /** VmRSS, its high-water mark VmHWM, and its anonymous (heap) and file-backed (code) parts, in KiB. */
  memoryKb(): { rss: number; peak: number; anon: number; file: number };
  alive(): boolean;
  signal(sig: NodeJS.Signals): void;
  readonly exited: Promise<Exit>;
  /** Sends `sig`, waits for the exit; SIGKILLs and rejects when it takes longer than `timeoutMs`. */
  stop(sig?: NodeJS.Signals, timeoutMs?: number): Promise<Exit & { ms: number }>;
  /** `node dist/cli.js VERB ...hostArgs ...args` inside the lab's namespace. */
  cli(verb: string, args?: readonly string[]): Promise<ProcResult>;
  /** The last lines of stdout and stderr, for a failure message. */
  tail(n?: number): string;
}

export interface AgentStateFile {
  readonly pid: number;
  readonly lastReconcileAt: string | null;
  readonly lastResult: string | null;
  readonly lastError: string | null;
  readonly driftCounts: Record<string, number>;
  readonly recentDrift: { at: string; kind: string; message: string; repaired: boolean }[];
}

// Settings a developer's shell or the test runner may carry that would change what the agent does.
const STRIPPED = /^(IMDS_GUARD_|DOCKER_|NODE_OPTIONS$|NODE_TEST)/;

function agentEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!STRIPPED.test(k)) env[k] = v;
  return { ...env, ...extra };
}

/** Agents this process started and that have not exited: killed (by pid) if the process exits first. */
const running = new Map<number, ChildProcess>();
process.once('exit', () => {
  for (const child of running.values()) child.kill('SIGKILL');
});

function procStatusKb(pid: number, field: string): number {
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN);
}

export function agentFiles(root: string): AgentFiles {
  const bootScriptDir = join(root, 'local.d');
  return { stateDir: join(root, 'state'), bootScriptDir, bootScript: join(bootScriptDir, 'imds-guard.start'), openrcRoot: join(root, 'runlevels') };
}

/**
 * Where an agent runs: a lab's Docker host, or a bare throwaway namespace (test/helpers/netns.ts)
 * with `dockerHost: null`, where no Docker flag is given and the config file decides.
 */
export type AgentHost = Pick<Lab, 'netns' | 'dir'> & { readonly dockerHost: string | null; readonly cgroupParent?: string };

/** A throwaway namespace and directory for agents without a lab, and their config file (`yaml`); all gone when the test ends. */
export function bareAgentHost(t: { after(fn: () => void): void }, tag: string, yaml: string): { ns: Netns; host: AgentHost; root: string; configFile: string } {
  const ns = createNetns(tag);
  t.after(() => ns.destroy());
  const root = mkdtempSync(join(tmpdir(), `igt-${tag}-`));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const configFile = join(root, 'config.yaml');
  writeFileSync(configFile, yaml);
  return { ns, host: { netns: ns.name, dir: root, dockerHost: null }, root, configFile };
}

/** The flags every command of a test host shares: the lab's Docker and the lab's directories. */
export function hostArgs(lab: AgentHost, files: AgentFiles): string[] {
  const docker = lab.dockerHost === null ? [] : ['--docker-host', lab.dockerHost];
  // --cgroup-parent: the lab's dockerd puts its containers under a parent of its own, not /docker.
  const parent = lab.cgroupParent === undefined ? [] : ['--cgroup-parent', lab.cgroupParent];
  return [...docker, ...parent, '--state-dir', files.stateDir, '--boot-script', 'always', '--boot-script-dir', files.bootScriptDir, '--openrc-root', files.openrcRoot];
}

/** `imds-guard ARGS` (dist/imds-guard: a one-shot verb from the snapshot) inside the lab's Docker host namespace. */
export function cliInLab(lab: Pick<Lab, 'netns'>, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<ProcResult> {
  return runProc('nsenter', [`--net=/run/netns/${lab.netns}`, COMMAND, ...args], { env: agentEnv(env), timeoutMs: 60_000 });
}

export async function startAgent(lab: AgentHost, opts: AgentOptions = {}): Promise<Agent> {
  const files = agentFiles(opts.root ?? lab.dir);
  mkdirSync(files.stateDir, { recursive: true });
  mkdirSync(files.bootScriptDir, { recursive: true });
  const common = hostArgs(lab, files);
  const args = [
    'run',
    ...common,
    ...(opts.driftSchedule === null ? [] : ['--drift-schedule', opts.driftSchedule ?? '*/1 * * * * *']),
    '--log-level',
    opts.logLevel ?? 'debug',
    ...(opts.configFile === undefined ? [] : ['--config', opts.configFile]),
    ...(opts.extraArgs ?? []),
  ];
  const child = spawn('nsenter', [`--net=/run/netns/${lab.netns}`, process.execPath, CLI, ...args], { env: agentEnv(opts.env ?? {}), stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not start nsenter for the agent');
  running.set(pid, child);

  const lines: LogLine[] = [];
  const raw: string[] = [];
  const waiters = new Set<() => void>();
  const notify = (): void => waiters.forEach((w) => w());
  let partial = '';
  child.stdout.on('data', (b: Buffer) => {
    partial += b.toString('utf8');
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const text = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      raw.push(text);
      try {
        lines.push(JSON.parse(text) as LogLine);
      } catch {
        lines.push({ msg: text });
      }
    }
    notify();
  });
  const stderr: string[] = [];
  child.stderr.on('data', (b: Buffer) => stderr.push(b.toString('utf8')));

  let exit: Exit | null = null;
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(pid);
      exit = { code, signal, at: performance.now() };
      notify();
      resolve(exit);
    });
  });

  const tail = (n = 15): string => `stdout:\n${raw.slice(-n).join('\n')}\nstderr:\n${stderr.join('').trimEnd().split('\n').slice(-n).join('\n')}`;

  const waitFor: Agent['waitFor'] = async (what, match, o = {}) => {
    const deadline = performance.now() + (o.timeoutMs ?? 10_000);
    let i = o.from ?? 0;
    for (;;) {
      for (; i < lines.length; i++) if (match(lines[i]!)) return lines[i]!;
      if (exit !== null) throw new Error(`the agent exited (code ${exit.code}, signal ${exit.signal}) before ${what}\n${tail()}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no ${what} within ${o.timeoutMs ?? 10_000} ms\n${tail()}`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          waiters.delete(done);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(done, Math.min(left, 200));
        waiters.add(done);
      });
    }
  };

  const state = (): AgentStateFile | null => {
    try {
      return JSON.parse(readFileSync(join(files.stateDir, 'state.json'), 'utf8')) as AgentStateFile;
    } catch {
      return null;
    }
  };

  const agent: Agent = {
    pid,
    files,
    hostArgs: common,
    lines: () => lines,
    mark: () => lines.length,
    events: (name, from = 0) => lines.slice(from).filter((l) => l.event === name),
    waitFor,
    state,
    rssKb: () => procStatusKb(pid, 'VmRSS'),
    memoryKb: () => ({ rss: procStatusKb(pid, 'VmRSS'), peak: procStatusKb(pid, 'VmHWM'), anon: procStatusKb(pid, 'RssAnon'), file: procStatusKb(pid, 'RssFile') }),
    alive: () => exit === null,
    signal: (sig) => {
      if (exit === null) child.kill(sig);
    },
    exited,
    async stop(sig = 'SIGTERM', timeoutMs = 5_000) {
      if (exit !== null) return { ...exit, ms: 0 };
      const t0 = performance.now();
      child.kill(sig);
      const timer = new Promise<null>((r) => setTimeout(() => r(null), timeoutMs).unref());
      const done = await Promise.race([exited, timer]);
      if (done === null) {
        child.kill('SIGKILL');
        await exited;
        throw new Error(`the agent did not exit within ${timeoutMs} ms of ${sig}; killed\n${tail()}`);
      }
      return { ...done, ms: done.at - t0 };
    },
    cli: (verb, extra = []) => cliInLab(lab, [verb, ...common, ...extra]),
    tail,
  };

  if (opts.waitReady ?? true) {
    if (lab.dockerHost !== null) await waitFor('docker-connected', (l) => l.event === 'docker-connected', { timeoutMs: 20_000 });
    const t0 = performance.now();
    // This agent's own pass: a restarted suite's state directory still holds the last agent's.
    const recorded = (): boolean => {
      const st = state();
      return st !== null && st.pid === pid && st.lastReconcileAt !== null;
    };
    while (!recorded()) {
      if (exit !== null || performance.now() - t0 > 20_000) throw new Error(`the agent recorded no pass\n${tail()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return agent;
}

/** A table of the lab host as iptables-save prints it, without `#` lines and with counters zeroed. */
export async function tableSave(lab: Lab, table: 'nat' | 'filter', family: 'ipv4' | 'ipv6' = 'ipv4'): Promise<string> {
  const r = await lab.inHost(family === 'ipv4' ? 'iptables-save' : 'ip6tables-save', ['-t', table]);
  if (r.code !== 0) throw new Error(`iptables-save -t ${table} in ${lab.netns} exited ${r.code}: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');
}

/** The lab host's nat table as iptables-save prints it, without `#` lines and with counters zeroed. */
export const natSave = (lab: Lab, family: 'ipv4' | 'ipv6' = 'ipv4'): Promise<string> => tableSave(lab, 'nat', family);
/** The lab host's filter table, the same way. */
export const filterSave = (lab: Lab, family: 'ipv4' | 'ipv6' = 'ipv4'): Promise<string> => tableSave(lab, 'filter', family);

/** `iptables ARGS` (or ip6tables) inside the lab host; throws unless it exits 0. */
export async function labIptables(lab: Lab, args: readonly string[], family: 'ipv4' | 'ipv6' = 'ipv4'): Promise<void> {
  const r = await lab.inHost(family === 'ipv4' ? 'iptables' : 'ip6tables', args);
  if (r.code !== 0) throw new Error(`iptables ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
}

/** The rules of `chain` in a saved table, in order, as `-A CHAIN ...` lines. */
export function rulesOf(save: string, chain: string): string[] {
  return save.split('\n').filter((l) => l.startsWith(`-A ${chain} `));
}

/** The PREROUTING rules of a saved nat table, in order. */
export const preroutingOf = (save: string): string[] => rulesOf(save, 'PREROUTING');

/** The chains imds-guard owns, by table. */
export const OWNED = { nat: ['IMDS-GUARD'], filter: ['IMDS-GUARD-FWD', 'IMDS-GUARD-OUT'] } as const;

/** Lines of a saved table that are imds-guard's: its chains' declarations and rules, and the jumps to them. */
export function ownLines(save: string): string[] {
  return save.split('\n').filter((l) => /IMDS-GUARD|imds-guard/.test(l));
}

/** A saved table with imds-guard's lines taken out: what is someone else's, in order. */
export function withoutOwn(save: string): string {
  const own = new Set(ownLines(save));
  return save.split('\n').filter((l) => !own.has(l)).join('\n');
}

/** The agent's `applied transaction` lines (one per iptables-restore it ran), from `from` on, optionally of one table. */
export function restoresOf(agent: Agent, from: number, table?: 'nat' | 'filter'): LogLine[] {
  return agent.lines().slice(from).filter((l) => l.msg === 'applied transaction' && (table === undefined || l.table === table));
}

/** `audit --format json` of the agent's host, with `extra` flags (e.g. the same --allow): the report and the exit status. */
export async function auditJson(agent: Agent, extra: readonly string[] = []): Promise<{ report: AuditReport; code: number; stderr: string }> {
  const r = await agent.cli('audit', ['--format', 'json', ...extra]);
  try {
    return { report: JSON.parse(r.stdout) as AuditReport, code: r.code, stderr: r.stderr };
  } catch {
    throw new Error(`audit printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

export interface TimedProbe {
  readonly gotCredentials: boolean;
  readonly refused: boolean;
  /** Time from just before `nc` to just after it, measured inside the container (10 ms resolution, /proc/uptime). */
  readonly innerMs: number;
  /** Wall time of the whole `docker run --rm`. */
  readonly ms: number;
  readonly output: string;
}

// /proc/uptime has centiseconds: enough to tell "refused at once" from a 3 s timeout.
const timedNc = (address: string): string =>
  `read a _ </proc/uptime; printf '${CRED_REQUEST}' | nc -w 3 ${address} 80 2>&1; read b _ </proc/uptime; ` +
  'a=${a%.*}${a#*.}; b=${b%.*}${b#*.}; echo "inner_ms=$(( (b - a) * 10 ))"';

function timed(output: string, ms: number): TimedProbe {
  const inner = /inner_ms=(\d+)/.exec(output)?.[1];
  return { gotCredentials: output.includes(CRED_MARKER), refused: /Connection refused/.test(output), innerMs: inner === undefined ? Number.NaN : Number(inner), ms, output };
}

export interface TimedProbeOptions {
  /** The endpoint address to ask (default the IPv4 one; MD_ADDR6 for IPv6). */
  readonly address?: string;
  /** More `docker run` flags (a label, a --cgroup-parent). */
  readonly runArgs?: readonly string[];
}

/** One container on `network` (`host` for a host-network one) asks for the credentials and times its own attempt. */
export async function timedProbe(lab: Lab, network: string, opts: TimedProbeOptions = {}): Promise<TimedProbe> {
  const t0 = performance.now();
  const r = await lab.docker(['run', '--rm', '--pull', 'never', '--network', network, ...(opts.runArgs ?? []), LAB_IMAGE, 'sh', '-c', timedNc(opts.address ?? MD_ADDR)], { timeoutMs: 60_000 });
  return timed(r.stdout + r.stderr, performance.now() - t0);
}

/** The same attempt made by `docker exec` in a running container (a new socket in its cgroup and namespace). */
export async function timedExec(lab: Lab, container: string, address: string = MD_ADDR): Promise<TimedProbe> {
  const t0 = performance.now();
  const r = await lab.docker(['exec', container, 'sh', '-c', timedNc(address)], { timeoutMs: 60_000 });
  return timed(r.stdout + r.stderr, performance.now() - t0);
}

/** Wall time of `docker run --rm` of a container that does nothing: what a probe costs besides its request. */
export async function noopRunMs(lab: Lab, network: string): Promise<number> {
  const t0 = performance.now();
  const r = await lab.docker(['run', '--rm', '--pull', 'never', '--network', network, LAB_IMAGE, 'true'], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`docker run true exited ${r.code}: ${r.stderr}`);
  return performance.now() - t0;
}

/** Runs `docker ARGS` against the lab and throws with its stderr unless it exits 0; returns stdout trimmed. */
export async function mustDocker(lab: Lab, args: readonly string[], timeoutMs = 60_000): Promise<string> {
  const r = await lab.docker(args, { timeoutMs });
  if (r.code !== 0) throw new Error(`docker ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** One test file's lab and agent: up before its tests, stopped and down after them (also after a failure). */
export interface AgentSuite {
  /** The `skip` option for the file's tests: why this machine cannot run a lab, or false. */
  readonly skip: string | boolean;
  lab(): Lab;
  /** The agent, started now if it is not running yet. */
  agent(): Promise<Agent>;
  /** Stops the agent (SIGTERM, rules stay) if one runs; the next `agent()` starts a new one, with `next` as its options when given. */
  stopAgent(next?: AgentOptions): Promise<void>;
}

export interface SuiteOptions {
  /** Start the agent in `before` (default), or on the first call to `agent()`. */
  readonly startEarly?: boolean;
  /** Runs once the lab is up and before the agent starts; returns the agent's options. */
  readonly prepare?: (lab: Lab) => Promise<AgentOptions> | AgentOptions;
}

/** Registers the file's `before` and `after` hooks for lab `name` (at most 24 characters). */
export function agentSuite(name: string, opts: SuiteOptions = {}): AgentSuite {
  const available = labAvailable();
  const skip = available.ok ? false : (available.why ?? true);
  let lab: Lab | undefined;
  let agent: Promise<Agent> | undefined;
  let agentOptions: AgentOptions = {};
  const theLab = (): Lab => {
    if (lab === undefined) throw new Error('the lab did not come up');
    return lab;
  };
  const theAgent = (): Promise<Agent> => (agent ??= startAgent(theLab(), agentOptions));
  before(async () => {
    if (skip !== false) return;
    ensureBuilt();
    lab = await startLab(name);
    agentOptions = (await opts.prepare?.(lab)) ?? {};
    if (opts.startEarly ?? true) await theAgent();
  });
  after(async () => {
    await agent?.then((a) => a.stop()).catch(() => {});
    await lab?.down();
  });
  const stopAgent = async (next?: AgentOptions): Promise<void> => {
    const running = agent;
    agent = undefined;
    if (next !== undefined) agentOptions = next;
    if (running !== undefined) await (await running).stop();
  };
  return { skip, lab: theLab, agent: theAgent, stopAgent };
}
