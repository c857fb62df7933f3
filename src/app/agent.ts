import type { Logger } from 'pino';
import type { Config } from '../core/config.js';
import { formatEndpoint } from '../core/endpoint.js';
import { type Finding, hasDrift } from '../core/findings.js';
import type { Backend, Family } from '../core/family.js';
import type { CheapRead } from '../core/deciding-reads.js';
import type { NetworkView } from '../core/coverage.js';
import { DOCKER_SETTLE_MS, type DockerSettling, settlingAfter, splitDockerChurn, stillSettling } from '../core/docker-churn.js';
import { type DriftHistory, EMPTY_HISTORY, recordPass, splitFirstInstall } from '../core/drift-history.js';
import { configDigest, decideOnOtherAgent } from '../core/peer.js';
import { AgentConflictError, ExitCode, describeError } from '../errors.js';
import { type AgentPresence, claimAgentPresence } from '../shell/agent-presence.js';
import { type RepairRecord, contestFindings, detectContests, foldContests, recordRepair, repairDetails, repairSignatureOf } from '../core/contest.js';
import { spawnLines } from '../shell/exec.js';
import { type ScheduledJob, scheduleJob } from '../shell/schedule-timer.js';
import { watchFirewalld } from '../shell/firewalld-watch.js';
import { createLogger } from '../shell/logger.js';
import { watchNetfilter } from '../shell/netfilter-watch.js';
import { type AgentState, MAX_RECENT_DRIFT, writeAgentState } from './agent-state.js';
import { createAgentTelemetry } from './agent-telemetry.js';
import { watchDocker } from './docker-watch.js';
import { createPassLock } from './one-writer.js';
import { type Hold, type PassOutcome, createPassRunner } from './pass-runner.js';
import { createReloader } from './reloader.js';
import type { Ports } from './ports.js';
import { cheapReadAfter, reconcile } from './reconcile.js';
import { realPorts } from './wiring.js';

// SIGTERM must end the agent within a second: wait this long for a pass in flight
// (an iptables-restore is all or nothing either way), then exit with the rules in place.
const STOP_GRACE_MS = 700;
// After a failed pass, try again without waiting for the next drift check.
const RETRY_AFTER_ERROR_MS = 2_000;
// Container events that can change what the filter OUTPUT chain must hold.
const CONTAINER_ACTIONS = new Set(['start', 'die', 'destroy']);
// How often a converged agent still reads every table (the other backend, raw) in full.
const FULL_READ_EVERY_MS = 10 * 60_000;
// Wake-ups after which the next pass reads everything. netfilter-native: a change that
// may be in someone's native nftables table, which only a full read looks at.
const FULL_REASONS = new Set(['start', 'reload', 'docker-connected', 'retry', 'netfilter-native']);

interface Running {
  config: Config;
  /** configDigest of the configuration as loaded (before any fallback a pass makes). */
  digest: string;
  ports: Ports;
  cron: ScheduledJob;
  docker: { stop(): void } | null;
  netfilter: { stop(): void };
  firewalld: { stop(): void };
  /** Started by a reload and not yet through a pass: the boot script then follows the new configuration, which is not drift. */
  reloaded: boolean;
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
  const telemetry = createAgentTelemetry(version, log);
  const started = new Date().toISOString();
  let history: DriftHistory = EMPTY_HISTORY;
  let retryTimer: NodeJS.Timeout | null = null;
  // Docker's rules for a new bridge left above its -j DOCKER-USER while its network create finishes.
  let dockerSettling: DockerSettling = new Map();
  let settleTimer: NodeJS.Timeout | null = null;
  let state: AgentState = { version: 1, pid: process.pid, startedAt: started, lastReconcileAt: null, lastResult: null, lastError: null, driftCounts: {}, recentDrift: [], contests: [] };
  let current: Running | null = null;
  let networksBefore: ReadonlyMap<string, NetworkView> | null = null;

  // One agent per network namespace, or several with one configuration (src/core/peer.ts).
  const loadedDigest = configDigest(config);
  const whoWeAre = () => ({ pid: process.pid, verb: 'run', version, configDigest: current?.digest ?? loadedDigest });
  let presence: AgentPresence = await claimAgentPresence(whoWeAre);
  const decision = decideOnOtherAgent(loadedDigest, presence.kind === 'taken' ? presence : null);
  const other = presence.kind === 'taken' ? { otherPid: presence.answer?.pid, otherDigest: presence.answer?.configDigest } : {};
  if (decision.action === 'refuse') {
    const conflict = new AgentConflictError(decision.message);
    log.error({ event: 'another-agent', ...other, configDigest: loadedDigest }, decision.message);
    process.stderr.write(`imds-guard: ${conflict.message}\n`);
    return conflict.exitCode;
  }
  if (decision.action === 'warn') log.warn({ event: 'another-agent', ...other, configDigest: loadedDigest }, decision.message);
  const writer = createPassLock({ version, log });

  // When the last full read was, and what the passes after it may read cheaply (null: everything).
  let lastFull: { at: number; cheap: CheapRead | null } | null = null;
  // The recent repairs, and what each distinct repair undid: the same one again and again is a contest (core/contest).
  let repairs: RepairRecord[] = [];
  const repairedWhat = new Map<string, { kinds: string[]; evidence: string[] }>();
  // Signatures of the contests going on, so each is logged once when it begins.
  let contesting = new Set<string>();
  // Families whose old connections could not be cut yet (kept until a pass succeeds at it).
  let cutPending: readonly Family[] = [];
  const pass = async (reasons: string[], hold: Hold | null): Promise<PassOutcome> => {
    const run = current;
    if (run === null) return { repairedSignature: null };
    let repairedSignature: string | null = null;
    const startedAt = new Date();
    const at = startedAt.toISOString();
    const t0 = performance.now();
    // An agent that found another one holding the name takes it over once that one is gone.
    if (presence.kind === 'taken') presence = await claimAgentPresence(whoWeAre);
    try {
      // A converged agent reads only the deciding chains; a full read at start, after a
      // reload or reconnect, after anything was found, and every FULL_READ_EVERY_MS (the
      // other backend is read then).
      const fullDue = lastFull === null || Date.now() - lastFull.at >= FULL_READ_EVERY_MS || reasons.some((r) => FULL_REASONS.has(r));
      // During a repair backoff the same repair waits (the runner asks again when it ends); any other is made now.
      const held = hold === null ? {} : { hold: (findings: readonly Finding[]) => repairSignatureOf(splitDockerChurn(findings).drift) === hold.signature };
      const opts = { ...(fullDue || lastFull?.cheap == null ? {} : { cheap: lastFull.cheap }), cutPending, waitForDocker: stillSettling(dockerSettling, Date.now()), ...held };
      const result = await writer.around(run.config, () => reconcile(run.config, run.ports, opts));
      cutPending = result.cutPending;
      // Look again once they are no longer fresh: by then Docker has moved its jump, or the pass moves ours.
      dockerSettling = settlingAfter(dockerSettling, result.plan.awaitingDocker, Date.now());
      if (dockerSettling.size > 0) {
        settleTimer ??= setTimeout(() => {
          settleTimer = null;
          runner.request('docker-settle');
        }, DOCKER_SETTLE_MS);
      }
      if (result.reads === 'full') lastFull = { at: Date.now(), cheap: cheapReadAfter(result) };
      if (result.held === true && hold !== null) {
        run.ports.log.debug({ event: 'repair-held', inMs: Math.max(0, Math.round(hold.untilMs - performance.now())), reasons }, 'the same repair again during its backoff: made when the backoff ends');
        return { repairedSignature: null, held: true };
      }
      const first = networksBefore === null ? splitFirstInstall(result.findings) : { drift: [...result.findings], install: [] };
      if (hasDrift(first.install)) {
        run.ports.log.info({ event: 'installed', families: [...new Set(first.install.flatMap((f) => (f.family === undefined ? [] : [f.family])))], repaired: result.repaired }, result.repaired ? 'first install: protection put in place' : 'not installed yet (report mode)');
      }
      // Docker's rules for its bridges, put above the backstop jump by `network create` or a
      // dockerd start, and the DOCKER-USER chain dockerd makes, are repaired like drift but
      // are not drift (core/docker-churn).
      const { drift: judged, churn } = splitDockerChurn(first.drift);
      // The first pass after a reload rewrites the boot script for the new configuration: our change, not drift.
      const drift = run.reloaded ? judged.filter((f) => f.kind !== 'boot-script-stale') : judged;
      run.reloaded = false;
      if (churn.length > 0) {
        const fields = { event: 'docker-churn', families: [...new Set(churn.flatMap((f) => (f.family === undefined ? [] : [f.family])))], evidence: [...new Set(churn.filter((f) => f.kind === 'jump-not-first' || f.kind === 'jump-missing').flatMap((f) => f.evidence))], repaired: result.repaired, reasons };
        const made = churn.some((f) => f.kind === 'jump-missing');
        const msg = made
          ? result.repaired ? 'Docker made its DOCKER-USER chain; put the backstop jump at its top' : 'Docker made its DOCKER-USER chain, without the backstop jump (report mode: left as it is)'
          : result.repaired
            ? "Docker put its bridges' rules above the FORWARD backstop jump; moved the jump back on top"
            : result.plan.awaitingDocker.length > 0
              ? "Docker is setting up a network: its bridge's rules sit above its -j DOCKER-USER for now; left for Docker to finish"
              : "Docker's bridge rules sit above the FORWARD backstop jump (report mode: left as they are)";
        if (result.repaired) run.ports.log.info(fields, msg);
        else run.ports.log.debug(fields, msg);
      }
      // Networks come and go with no change to the rules (the catch-all covers them from
      // their first packet); they are logged as coverage, with how each is covered.
      const now = new Map(result.plan.networks.map((n) => [n.name, n]));
      if (result.observation.dockerReachable === true) {
        const before = networksBefore;
        if (before !== null) {
          for (const n of [...now.values()].filter((x) => !before.has(x.name))) {
            const log = n.coverage === 'not-coverable' || n.coverage === 'allowed' ? run.ports.log.warn.bind(run.ports.log) : run.ports.log.info.bind(run.ports.log);
            log({ event: n.coverage === 'not-coverable' || n.coverage === 'allowed' ? 'exposed' : 'covered', network: n.name, driver: n.driver, coverage: n.coverage, interface: n.interface, reasons }, `network ${n.name}: ${n.coverage} (${n.why})`);
          }
          for (const name of [...before.keys()].filter((x) => !now.has(x))) run.ports.log.info({ event: 'uncovered', network: name, reasons }, `network ${name} is gone`);
        }
        networksBefore = now;
      } else networksBefore ??= new Map();
      const folded = recordPass(history, drift, result.repaired, at, MAX_RECENT_DRIFT);
      history = folded.history;
      for (const f of folded.fresh) {
        run.ports.log.warn({ event: 'drift', kind: f.kind, severity: f.severity, family: f.family, backend: f.backend, table: f.table, chain: f.chain, interface: f.interface, endpoint: f.endpoint, evidence: f.evidence, check: f.id }, `drift: ${f.message}`);
      }
      if (result.repaired) run.ports.log.info({ event: 'repaired', restores: result.restores, reads: result.reads, durationMs: Math.round(performance.now() - t0), kinds: [...new Set(folded.fresh.map((f) => f.kind))], reasons }, 'repaired');
      else run.ports.log.debug({ event: 'reconciled', converged: result.converged, reads: result.reads, durationMs: Math.round(performance.now() - t0), reasons }, 'pass done');
      // What this pass undid of someone else's change: the same again and again is a fight.
      if (result.repaired) repairedSignature = repairSignatureOf(drift);
      const nowMs = Date.now();
      if (repairedSignature !== null) {
        repairs = recordRepair(repairs, { at: nowMs, signature: repairedSignature });
        repairedWhat.set(repairedSignature, repairDetails(drift));
        for (const sig of [...repairedWhat.keys()]) if (!repairs.some((r) => r.signature === sig)) repairedWhat.delete(sig);
      }
      const active = detectContests(repairs, nowMs);
      const contests = foldContests(state.contests, active, (sig) => repairedWhat.get(sig), nowMs);
      const began = active.filter((x) => !contesting.has(x.signature));
      contesting = new Set(active.map((x) => x.signature));
      for (const c of began) {
        const d = repairedWhat.get(c.signature);
        run.ports.log.warn({ event: 'contest', check: 'IG-307', repairs: c.repairs, withinMs: c.lastAt - c.firstAt, kinds: d?.kinds, evidence: d?.evidence }, `someone keeps undoing the protection: the same repair ${c.repairs} times in ${Math.round((c.lastAt - c.firstAt) / 1000)} s; repairing each time, with a backoff`);
      }
      // The findings gauge carries a contest too (IG-307), so a fleet sees the fight, not just the repairs.
      telemetry.recordPass(result, performance.now() - t0, startedAt, folded.fresh.map((f) => f.kind), contestFindings(contests, new Date(nowMs)));
      const drifted = hasDrift(drift);
      state = { ...state, lastReconcileAt: at, lastResult: result.repaired ? 'repaired' : drifted ? 'drift' : 'converged', lastError: null, driftCounts: history.counts, recentDrift: [...history.recent], contests: contests.map((c) => ({ ...c, kinds: [...c.kinds], evidence: [...c.evidence] })) };
    } catch (e) {
      run.ports.log.error({ event: 'reconcile-failed', err: describeError(e), reasons }, 'reconcile pass failed; the rules in place are kept; retrying');
      state = { ...state, lastReconcileAt: at, lastResult: 'error', lastError: describeError(e) };
      telemetry.recordPass(null, performance.now() - t0, startedAt, []);
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

  // Everything that can throw (adapters, the cron expression) comes before anything
  // starts, so a failed start or reload leaves no timer or stream behind.
  const startWith = async (cfg: Config, lg: Logger): Promise<Running> => {
    const ports = await realPorts(cfg, lg);
    const cron = scheduleJob(cfg.driftSchedule, () => runner.request('drift-check'), (e: unknown) => lg.error({ err: describeError(e) }, 'drift check failed'));
    const docker = ports.docker === null ? null : watchDocker(ports.docker, lg, { onEvent: (e) => {
        // Container start and stop change the host-network rules; other container events (exec, health) do not.
        if (e.type === 'container' && !CONTAINER_ACTIONS.has(e.action)) return;
        runner.request(`docker-${e.type}-${e.action}`);
      }, onConnected: () => runner.request('docker-connected') });
    await telemetry.configure(cfg, ports);
    // Tampering is repaired within a pass instead of at the next drift check. With backend
    // auto the monitor runs too: nf_tables also carries the other backend's rules.
    const netfilter = watchNetfilter(spawnLines, lg, { backend: cfg.backend === 'legacy' ? 'legacy' : 'nft', onChange: (r) => runner.request(r) });
    const firewalld = watchFirewalld(lg, { onChange: (r) => runner.request(r) });
    cron.start();
    return { config: cfg, digest: configDigest(cfg), ports, cron, docker, netfilter, firewalld, reloaded: false };
  };
  const stopRunning = (r: Running): void => {
    r.cron.stop();
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
  const reloader = createReloader<Config, Running>(current, {
    load,
    start: (next) => startWith(next, log),
    stop: stopRunning,
    report: (outcome) => {
      switch (outcome.kind) {
        case 'rejected':
          log.error({ event: 'reload-rejected', err: describeError(outcome.error) }, 'new configuration rejected; the running one stays');
          return;
        case 'failed':
          log.error({ event: 'reload-failed', err: describeError(outcome.error) }, 'could not start with the new configuration; the running one stays');
          return;
        case 'reloaded': {
          const next = outcome.running.config;
          // Not yet through a pass: the boot script then follows the new configuration, which is not drift.
          outcome.running.reloaded = true;
          current = outcome.running;
          log.level = next.logLevel;
          if (outcome.stopError !== undefined) log.warn({ err: describeError(outcome.stopError) }, 'stopping the previous configuration failed');
          log.info({ event: 'reloaded', mode: next.mode, allow: next.allow, schedule: next.driftSchedule }, 'configuration reloaded');
          runner.request('reload');
        }
      }
    },
  });
  log.info({ event: 'started', version, mode: config.mode, backend: config.backend, allow: config.allow, endpoints: config.endpoints.map(formatEndpoint), schedule: config.driftSchedule }, 'imds-guard agent started');
  runner.request('start');

  return await new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ event: 'stopping', signal }, 'stopping; the rules stay in place');
      reloader.close();
      stopRunning(reloader.current());
      if (presence.kind === 'claimed') void presence.release();
      if (retryTimer !== null) clearTimeout(retryTimer);
      if (settleTimer !== null) clearTimeout(settleTimer);
      runner.stop();
      void runner.idle(STOP_GRACE_MS).then(() => {
        for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.removeAllListeners(s);
        void telemetry.close().finally(() => resolve(ExitCode.ok));
      });
    };
    // PID 1 in a container gets no default signal actions: without these handlers
    // `docker stop` would wait out its timeout and SIGKILL us.
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => void reloader.request());
  });
}
