import { CronJob } from 'cron';
import type { Logger } from 'pino';
import type { Config } from '../core/config.js';
import { formatEndpoint } from '../core/endpoint.js';
import { repairSignatureOf } from '../core/contest.js';
import { hasDrift } from '../core/findings.js';
import { type DriftHistory, EMPTY_HISTORY, recordPass, splitFirstInstall, splitNewCoverage } from '../core/drift-history.js';
import { ExitCode, describeError } from '../errors.js';
import { spawnLines } from '../shell/exec.js';
import { watchFirewalld } from '../shell/firewalld-watch.js';
import { createLogger } from '../shell/logger.js';
import { watchNetfilter } from '../shell/netfilter-watch.js';
import { type AgentState, MAX_RECENT_DRIFT, writeAgentState } from './agent-state.js';
import { watchDocker } from './docker-watch.js';
import { type PassOutcome, createPassRunner } from './pass-runner.js';
import type { Ports } from './ports.js';
import { reconcile } from './reconcile.js';
import { realPorts } from './wiring.js';

// SIGTERM must end the agent within a second: wait this long for a pass in flight
// (an iptables-restore is all or nothing either way), then exit with the rules in place.
const STOP_GRACE_MS = 700;
// After a failed pass, try again without waiting for the next drift check.
const RETRY_AFTER_ERROR_MS = 2_000;

interface Running {
  config: Config;
  ports: Ports;
  cron: CronJob;
  docker: { stop(): void } | null;
  netfilter: { stop(): void };
  firewalld: { stop(): void };
}

/** `imds-guard run`: the long-running agent. Resolves with the exit status when stopped. */
export async function runAgent(load: () => Promise<Config>, version: string): Promise<number> {
  let config: Config;
  try {
    config = await load();
  } catch (e) {
    process.stderr.write(`imds-guard: ${describeError(e)}\n`);
    return ExitCode.usage;
  }
  const log = await createLogger(config.logLevel, 1);
  const started = new Date().toISOString();
  let history: DriftHistory = EMPTY_HISTORY;
  let retryTimer: NodeJS.Timeout | null = null;
  let state: AgentState = { version: 1, pid: process.pid, startedAt: started, lastReconcileAt: null, lastResult: null, lastError: null, driftCounts: {}, recentDrift: [] };
  let current: Running | null = null;
  let coveredBefore: ReadonlySet<string> | null = null;

  const pass = async (reasons: string[]): Promise<PassOutcome> => {
    const run = current;
    if (run === null) return { repairedSignature: null };
    let repairedSignature: string | null = null;
    const at = new Date().toISOString();
    try {
      const result = await reconcile(run.config, run.ports);
      if (result.setRefused) {
        // Refused twice already; asking again every pass would only repeat it (until a reload).
        run.config = { ...run.config, ipset: 'never' };
        run.ports.log.warn({ event: 'ipset-refused' }, 'the kernel refuses the set rule: custom-named bridges keep rules of their own until the agent is reloaded or restarted');
      }
      const first = coveredBefore === null ? splitFirstInstall(result.findings) : { drift: [...result.findings], install: [] };
      if (hasDrift(first.install)) {
        run.ports.log.info({ event: 'installed', families: [...new Set(first.install.flatMap((f) => (f.family === undefined ? [] : [f.family])))], repaired: result.repaired }, result.repaired ? 'first install: protection put in place' : 'not installed yet (report mode)');
      }
      const { drift } = splitNewCoverage(first.drift, coveredBefore, result.plan.interfaces);
      // Interfaces that came or went with Docker's networks (the first pass reports what it installed instead).
      const before = coveredBefore;
      const now = new Set(result.plan.interfaces);
      coveredBefore = now;
      for (const iface of before === null ? [] : [...now].filter((i) => !before.has(i))) {
        run.ports.log.info({ event: 'covered', interface: iface, reasons }, `now protecting new interface ${iface}`);
      }
      for (const iface of before === null ? [] : [...before].filter((i) => !now.has(i))) {
        run.ports.log.info({ event: 'uncovered', interface: iface, reasons }, `interface ${iface} is gone; its protection is removed`);
      }
      const folded = recordPass(history, drift, result.repaired, at, MAX_RECENT_DRIFT);
      history = folded.history;
      for (const f of folded.fresh) {
        run.ports.log.warn({ event: 'drift', kind: f.kind, severity: f.severity, family: f.family, backend: f.backend, interface: f.interface, endpoint: f.endpoint, evidence: f.evidence, check: f.id }, `drift: ${f.message}`);
      }
      if (result.repaired) run.ports.log.info({ event: 'repaired', restores: result.restores, setWrites: result.setWrites, kinds: [...new Set(folded.fresh.map((f) => f.kind))], reasons }, 'repaired');
      else run.ports.log.debug({ event: 'reconciled', converged: result.converged, reasons }, 'pass done');
      // What this pass undid of someone else's change: the same again and again is a fight.
      if (result.repaired) repairedSignature = repairSignatureOf(drift);
      const drifted = hasDrift(drift);
      state = { ...state, lastReconcileAt: at, lastResult: result.repaired ? 'repaired' : drifted ? 'drift' : 'converged', lastError: null, driftCounts: history.counts, recentDrift: [...history.recent] };
    } catch (e) {
      run.ports.log.error({ event: 'reconcile-failed', err: describeError(e), reasons }, 'reconcile pass failed; the rules in place are kept; retrying');
      state = { ...state, lastReconcileAt: at, lastResult: 'error', lastError: describeError(e) };
      retryTimer ??= setTimeout(() => {
        retryTimer = null;
        runner.request('retry');
      }, RETRY_AFTER_ERROR_MS);
    }
    await writeAgentState(run.ports.files, run.config.stateDir, state).catch((e: unknown) => run.ports.log.warn({ err: describeError(e) }, 'could not write the state file'));
    return { repairedSignature };
  };
  const runner = createPassRunner(pass, {
    // Covering a new network, the first pass and a reload never wait out a repair backoff.
    exempt: (r) => r.startsWith('docker-') || r === 'start' || r === 'reload',
    onBackoff: (b) =>
      b.repeats > 0
        ? log.warn({ event: 'repair-backoff', repeats: b.repeats, intervalMs: b.intervalMs, signature: b.signature }, `the same repair again (${b.repeats + 1} in a row): someone keeps undoing it; passes now at most every ${b.intervalMs} ms`)
        : log.info({ event: 'repair-backoff-ended', intervalMs: b.intervalMs }, 'the repairs stopped repeating; back to the normal pace'),
  });

  const startWith = async (cfg: Config, lg: Logger): Promise<Running> => {
    const ports = await realPorts(cfg, lg);
    const cron = CronJob.from({
      cronTime: cfg.driftSchedule,
      onTick: () => runner.request('drift-check'),
      start: true,
      waitForCompletion: true,
      errorHandler: (e: unknown) => lg.error({ err: describeError(e) }, 'drift check failed'),
    });
    const docker = ports.docker === null ? null : watchDocker(ports.docker, lg, { onEvent: (e) => runner.request(`docker-${e.action}`), onConnected: () => runner.request('docker-connected') });
    // Tampering is repaired within a pass instead of at the next drift check. With backend
    // auto the monitor runs too: nf_tables also carries the other backend's rules.
    const netfilter = watchNetfilter(spawnLines, lg, { backend: cfg.backend === 'legacy' ? 'legacy' : 'nft', onChange: (r) => runner.request(r) });
    const firewalld = watchFirewalld(lg, { onChange: (r) => runner.request(r) });
    return { config: cfg, ports, cron, docker, netfilter, firewalld };
  };
  const stopRunning = (r: Running): void => {
    void r.cron.stop();
    r.docker?.stop();
    r.netfilter.stop();
    r.firewalld.stop();
  };

  try {
    current = await startWith(config, log);
  } catch (e) {
    log.fatal({ err: describeError(e) }, 'cannot start');
    return ExitCode.usage;
  }
  log.info({ event: 'started', version, mode: config.mode, backend: config.backend, interfaces: config.interfaces, endpoints: config.endpoints.map(formatEndpoint), schedule: config.driftSchedule }, 'imds-guard agent started');
  runner.request('start');

  return await new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ event: 'stopping', signal }, 'stopping; the rules stay in place');
      if (current !== null) stopRunning(current);
      if (retryTimer !== null) clearTimeout(retryTimer);
      runner.stop();
      void runner.idle(STOP_GRACE_MS).then(() => {
        for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.removeAllListeners(s);
        resolve(ExitCode.ok);
      });
    };
    const reload = async (): Promise<void> => {
      let next: Config;
      try {
        next = await load();
      } catch (e) {
        log.error({ event: 'reload-rejected', err: describeError(e) }, 'new configuration rejected; the running one stays');
        return;
      }
      if (current !== null) stopRunning(current);
      log.level = next.logLevel;
      current = await startWith(next, log);
      log.info({ event: 'reloaded', mode: next.mode, interfaces: next.interfaces }, 'configuration reloaded');
      runner.request('reload');
    };
    // PID 1 in a container gets no default signal actions: without these handlers
    // `docker stop` would wait out its timeout and SIGKILL us.
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => void reload());
  });
}
