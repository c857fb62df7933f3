import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { type GaugeSeries, type PassSample, type ProbeSample, probeSeries, protectedSeries, tally, unixSeconds } from '../core/metrics-sample.js';

/**
 * The agent's Prometheus metrics. Import this module lazily (`await import(...)`) and only
 * when metrics are switched on: prom-client is not loaded otherwise.
 *
 * Create ONE per process, before the first pass, and keep it across SIGHUP reloads: the
 * counters (drift events, repairs, passes) live in it, and Prometheus reads a counter
 * that goes down as a restart of the agent. A reload may start or stop the HTTP server
 * or change the textfile path; it never makes a new Metrics.
 */
export interface Metrics {
  /** Folds one reconcile pass in: state gauges are replaced whole (a finding that is gone disappears), counters only grow. */
  recordPass(p: PassSample): void;
  /** Replaces the probe results whole with this run's and stamps the run time. */
  recordProbe(results: readonly ProbeSample[], at: Date): void;
  /** The exposition text served on /metrics: imds-guard's metrics and the agent process's own. */
  scrape(): Promise<string>;
  /**
   * The imds-guard metrics alone, for node_exporter's textfile collector: node_exporter
   * exports its own process_* series, and a textfile that repeats them is rejected whole.
   */
  textfile(): Promise<string>;
  /** The Content-Type of both texts (Prometheus text format 0.0.4). */
  readonly contentType: string;
}

export interface MetricsOptions {
  readonly version: string;
  /** Resident memory, CPU seconds, start time and open files of the agent (default true). */
  readonly processMetrics?: boolean;
}

const PREFIX = 'imds_guard_';
// A pass is an iptables-save and, now and then, a restore: about 5 ms on an idle host with
// few rules, seconds when the xtables lock is held or the table has tens of thousands of
// rules. 10 s is twice the default lock wait.
const PASS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createMetrics(opts: MetricsOptions): Metrics {
  // Our own registries, never prom-client's global one: nothing else in the process can
  // register into them, and a test can make as many as it likes.
  const guard = new Registry();
  const registers = [guard];
  const protectedGauge = new Gauge({ name: `${PREFIX}protected`, help: 'Whether containers are kept from the metadata endpoints of this address family (1) or not (0), as of the last successful pass.', labelNames: ['family'], registers });
  const findings = new Gauge({ name: `${PREFIX}findings`, help: 'Findings of the last successful pass, by check id, severity and status (pass, info, warn, fail).', labelNames: ['id', 'severity', 'status'], registers });
  const drift = new Counter({ name: `${PREFIX}drift_events_total`, help: 'Drift events seen by the agent since it started, by kind.', labelNames: ['kind'], registers });
  const repairs = new Counter({ name: `${PREFIX}repairs_total`, help: 'Passes that wrote the host back to the protected state.', registers });
  const passes = new Counter({ name: `${PREFIX}passes_total`, help: 'Reconcile passes since the agent started, by result (ok, error).', labelNames: ['result'], registers });
  const duration = new Histogram({ name: `${PREFIX}pass_duration_seconds`, help: 'How long a reconcile pass took, failed ones included.', buckets: PASS_BUCKETS, registers });
  const lastSuccess = new Gauge({ name: `${PREFIX}last_successful_pass_timestamp_seconds`, help: 'Unix time of the start of the last pass that succeeded; 0 before the first.', registers });
  const networks = new Gauge({ name: `${PREFIX}docker_networks`, help: "Docker's networks on this host, by how they are covered, as of the last successful pass.", labelNames: ['coverage'], registers });
  const hostContainers = new Gauge({ name: `${PREFIX}host_network_containers`, help: 'Containers on the host network, by how they are covered, as of the last successful pass.', labelNames: ['coverage'], registers });
  const probe = new Gauge({ name: `${PREFIX}probe_blocked`, help: 'Last probe of a metadata endpoint from inside a Docker network: 1 blocked (refused or timed out), 0 connected.', labelNames: ['network', 'endpoint'], registers });
  const probeAt = new Gauge({ name: `${PREFIX}probe_last_run_timestamp_seconds`, help: 'Unix time of the last probe run; 0 before the first.', registers });
  const build = new Gauge({ name: `${PREFIX}build_info`, help: 'Always 1; the labels say which agent runs.', labelNames: ['version', 'node_version'], registers });
  build.set({ version: opts.version, node_version: process.versions.node }, 1);
  // Zero from the start, so `increase()` sees the first error and the first repair.
  passes.inc({ result: 'ok' }, 0);
  passes.inc({ result: 'error' }, 0);

  const scraped = opts.processMetrics === false ? guard : Registry.merge([guard, processRegistry()]);

  return {
    recordPass(p) {
      duration.observe(p.durationSeconds);
      passes.inc({ result: p.ok ? 'ok' : 'error' });
      for (const kind of p.driftKinds) drift.inc({ kind });
      if (p.repaired) repairs.inc();
      // A failed pass saw nothing for certain: the last known state stays, and its age
      // (the last successful pass time) is what an alert looks at.
      if (!p.ok) return;
      lastSuccess.set(unixSeconds(p.at));
      replace(protectedGauge, protectedSeries(p.families));
      replace(findings, tally(p.findings, ['id', 'severity', 'status']));
      replace(networks, tally(p.networks, ['coverage']));
      replace(hostContainers, tally(p.hostContainers, ['coverage']));
    },
    recordProbe(results, at) {
      replace(probe, probeSeries(results));
      probeAt.set(unixSeconds(at));
    },
    scrape: () => scraped.metrics(),
    textfile: () => guard.metrics(),
    contentType: guard.contentType,
  };
}

// reset() and the sets run in one synchronous stretch, so a scrape (which awaits between
// metrics) never sees a gauge emptied and not yet refilled.
function replace<L extends string>(gauge: Gauge<L>, series: readonly GaugeSeries<L>[]): void {
  gauge.reset();
  for (const s of series) gauge.set(s.labels as Partial<Record<L, string>>, s.value);
}

/**
 * The agent process's own health, with the standard names (process_*), read only when
 * scraped. Not prom-client's collectDefaultMetrics: it samples the event loop every
 * 10 ms and observes every garbage collection, waking an agent that is otherwise idle
 * between drift checks, and it costs 2.7 MB of RSS where these four cost under 0.5 MB
 * (idle RSS of an esbuild bundle with the agent's V8 flags, scraped every 0.5 s: 46.5 MB
 * without prom-client, 49.2 MB with it and the imds_guard_ metrics, 49.5 MB with these
 * too, 51.9 MB with collectDefaultMetrics instead).
 */
function processRegistry(): Registry {
  const registry = new Registry();
  const registers = [registry];
  const started = Date.now() / 1000 - process.uptime();
  new Gauge({ name: 'process_start_time_seconds', help: 'Start time of the process since unix epoch in seconds.', registers }).set(Math.round(started));
  new Counter({
    name: 'process_cpu_seconds_total',
    help: 'Total user and system CPU time spent in seconds.',
    registers,
    collect() {
      const u = process.cpuUsage();
      this.reset();
      this.inc((u.user + u.system) / 1e6);
    },
  });
  new Gauge({
    name: 'process_resident_memory_bytes',
    help: 'Resident memory size in bytes.',
    registers,
    collect() {
      this.set(process.memoryUsage.rss());
    },
  });
  new Gauge({
    name: 'nodejs_heap_size_used_bytes',
    help: 'Process heap size used from Node.js in bytes.',
    registers,
    collect() {
      this.set(process.memoryUsage().heapUsed);
    },
  });
  return registry;
}
