import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { chunkUrl } from './bundle.js';
import type { BenchNetns } from './netns.js';
import { cleanEnv } from './proc.js';

/**
 * The agent's converged pass, measured in-process: one warm node process inside a
 * namespace loads the built bundle's chunks (dist/chunks/settings, logger, wiring,
 * reconcile, findings: the code `imds-guard run` executes, minified as shipped, not src/
 * through tsx), builds the config and the real ports once, and then runs
 * `reconcile(config, ports, opts)` whenever the bench asks, choosing `opts` the way
 * src/app/agent.ts does: a full read first, then, while the last full read was converged
 * without a failure, `{ cheap: cheapReadAfter(last full) }` (the deciding chains only, small
 * tables listed whole). Whatever the
 * code does with that option is what is timed; the pass reports what it read
 * (`result.reads`), so an escalation to a full read, or code without a cheap read, shows.
 *
 * Protocol: the bench writes `agent` or `full` and a newline; the child runs one pass and
 * answers one JSON line (PassSample). Timing and CPU are taken inside the child, around the
 * call, so the pipe round trip is not counted.
 */
export interface PassSample {
  /** Wall time of the reconcile call. */
  readonly ms: number;
  /** `deciding`, `full`, or `full (no reads field)` when the code does not say. */
  readonly reads: string;
  readonly converged: boolean;
  readonly restores: number;
  /** The child's own CPU time in the call (process.cpuUsage). */
  readonly selfCpuMs: number;
  /** CPU of the iptables processes it ran and reaped in the call (/proc/self/stat cutime+cstime, 10 ms ticks). */
  readonly childCpuMs: number;
}

export interface AgentPassProcess {
  pass(mode: 'agent' | 'full'): Promise<PassSample>;
  stop(): void;
}

/** The V8 setting the command (scripts/imds-guard.sh, AGENT_V8) gives `run` in every deployment form, given as NODE_OPTIONS. */
export const DEPLOYED_NODE_OPTIONS = ((): string => {
  const flag = /^AGENT_V8=(\S+)$/m.exec(readFileSync(new URL('../scripts/imds-guard.sh', import.meta.url), 'utf8'))?.[1];
  if (flag === undefined) throw new Error('scripts/imds-guard.sh sets no AGENT_V8');
  return flag;
})();

function childScript(cli: string, flags: Record<string, unknown>): string {
  const url = (m: string): string => JSON.stringify(chunkUrl(cli, m));
  return `import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
const { loadConfig } = await import(${url('app/settings')});
const { createLogger } = await import(${url('shell/logger')});
const { realPorts } = await import(${url('app/wiring')});
const { reconcile, cheapReadAfter } = await import(${url('app/reconcile')});
const config = await loadConfig(undefined, ${JSON.stringify(flags)}, {});
const ports = await realPorts(config, await createLogger('warn', 2));
// utime, stime, cutime, cstime are fields 14-17 of /proc/self/stat (11-14 after the ") ").
const reaped = () => { const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' '); return (Number(f[13]) + Number(f[14])) * 10; };
let last = null;
process.stdout.write(JSON.stringify({ ready: true }) + '\\n');
for await (const line of createInterface({ input: process.stdin })) {
  const mode = line.trim();
  const opts = mode === 'agent' && last !== null ? { cheap: last } : {};
  const c0 = process.cpuUsage(); const k0 = reaped(); const t0 = performance.now();
  const r = await reconcile(config, ports, opts);
  const ms = performance.now() - t0; const c = process.cpuUsage(c0); const k = reaped() - k0;
  const reads = typeof r.reads === 'string' ? r.reads : 'full (no reads field)';
  if (reads !== 'deciding') last = cheapReadAfter(r);
  process.stdout.write(JSON.stringify({ ms, reads, converged: r.converged, restores: r.restores, selfCpuMs: (c.user + c.system) / 1000, childCpuMs: k }) + '\\n');
}`;
}

/**
 * Starts the warm process in `ns` with config `flags` (the CLI's flag keys, as loadConfig
 * takes them) and waits until it has loaded and wired everything.
 */
export async function startAgentPass(ns: BenchNetns, cli: string, flags: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): Promise<AgentPassProcess> {
  const child: ChildProcess = spawn('nsenter', [`--net=${ns.path}`, process.execPath, '--input-type=module', '-e', childScript(cli, flags)], {
    env: cleanEnv({ NODE_OPTIONS: DEPLOYED_NODE_OPTIONS, ...env }),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr?.on('data', (b: Buffer) => stderr.push(b.toString('utf8')));
  const waiting: ((line: string | null) => void)[] = [];
  const queued: string[] = [];
  let closed = false;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const w = waiting.shift();
    if (w === undefined) queued.push(line);
    else w(line);
  });
  child.once('close', () => {
    closed = true;
    for (const w of waiting.splice(0)) w(null);
  });
  const nextLine = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const q = queued.shift();
      if (q !== undefined) return resolve(q);
      if (closed) return reject(new Error(`the in-agent pass process exited: ${stderr.join('').trim().slice(-600)}`));
      waiting.push((l) => (l === null ? reject(new Error(`the in-agent pass process exited: ${stderr.join('').trim().slice(-600)}`)) : resolve(l)));
    });
  await nextLine();
  return {
    async pass(mode) {
      child.stdin!.write(`${mode}\n`);
      return JSON.parse(await nextLine()) as PassSample;
    },
    stop: () => {
      child.stdin?.end();
      if (!closed) child.kill('SIGTERM');
    },
  };
}
