import type { Logger } from 'pino';
import type { Config } from '../core/config.js';
import { FAMILIES } from '../core/family.js';
import { type Finding, isFailure } from '../core/findings.js';
import type { PassSample } from '../core/metrics-sample.js';
import { type MetricsListen, formatMetricsListen } from '../core/metrics-settings.js';
import { describeError } from '../errors.js';
import type { Metrics } from '../shell/metrics.js';
import type { MetricsServer } from '../shell/metrics-export.js';
import { type ScheduledJob, scheduleJob } from '../shell/schedule-timer.js';
import type { Ports } from './ports.js';
import { probeFromContainers, probeSamples } from './probe-audit.js';
import type { ReconcileResult } from './reconcile.js';

/**
 * The agent's metrics and probe schedule. The Metrics object is made once per process,
 * the first time a configuration asks for metrics, and kept across reloads, so its
 * counters never reset on SIGHUP; a reload only starts, moves or stops the HTTP server
 * and the textfile. prom-client is loaded only when metrics are on.
 */
export interface AgentTelemetry {
  /** Applies a (new) configuration: metrics server, textfile path, probe schedule. */
  configure(config: Config, ports: Ports): Promise<void>;
  /** One pass done (result) or failed (null). `driftKinds` are the drift events the agent counted. */
  /** `extra`: findings of the agent's own beyond the pass's (a contest, IG-307), for the findings gauge. */
  recordPass(result: ReconcileResult | null, durationMs: number, at: Date, driftKinds: readonly string[], extra?: readonly Finding[]): void;
  close(): Promise<void>;
}

export function createAgentTelemetry(version: string, log: Logger): AgentTelemetry {
  let metrics: Metrics | null = null;
  let server: { listen: string; server: MetricsServer } | null = null;
  let textfile: string | null = null;
  let probeJob: ScheduledJob | null = null;
  let writing: Promise<void> = Promise.resolve();

  const ensureMetrics = async (): Promise<Metrics> => {
    if (metrics === null) {
      const { createMetrics } = await import('../shell/metrics.js');
      metrics = createMetrics({ version });
    }
    return metrics;
  };
  const writeTextfile = (): void => {
    if (metrics === null || textfile === null) return;
    const [m, path] = [metrics, textfile];
    // One write at a time; a failure is logged, never lost silently, and never stops a pass.
    writing = writing.then(async () => {
      const { writeTextfile: write } = await import('../shell/metrics-export.js');
      await write(m, path).catch((e: unknown) => log.warn({ event: 'metrics-textfile-failed', path, err: describeError(e) }, 'could not write the metrics textfile'));
    });
  };
  const moveServer = async (listen: MetricsListen | null): Promise<void> => {
    const want = listen === null ? null : formatMetricsListen(listen);
    if (server?.listen === want) return;
    if (server !== null) {
      await server.server.close();
      server = null;
    }
    if (listen === null || want === null) return;
    const { serveMetrics } = await import('../shell/metrics-export.js');
    server = { listen: want, server: await serveMetrics(await ensureMetrics(), listen) };
    log.info({ event: 'metrics-listening', listen: want }, `serving metrics on http://${want}/metrics`);
  };

  return {
    async configure(config, ports) {
      if (config.metricsListen !== null || config.metricsTextfile !== null) await ensureMetrics();
      textfile = config.metricsTextfile;
      try {
        await moveServer(config.metricsListen);
      } catch (e) {
        log.error({ event: 'metrics-listen-failed', err: describeError(e) }, 'could not serve metrics; the protection is not affected');
      }
      probeJob?.stop();
      probeJob = null;
      if (config.probeSchedule !== null) {
        probeJob = scheduleJob(
          config.probeSchedule,
          async () => {
            const report = await probeFromContainers(config, ports);
            const exposed = report.networks.flatMap((n) => n.endpoints.filter((e) => e.verdict === 'exposed').map((e) => `${n.network} -> ${e.endpoint}`));
            if (exposed.length > 0) log.error({ event: 'probe-exposed', exposed }, `probe: the metadata is reachable from ${exposed.join(', ')}`);
            else log.info({ event: 'probed', summary: report.summary }, 'probe: no network reaches the metadata');
            metrics?.recordProbe(probeSamples(report), new Date());
            writeTextfile();
          },
          (e: unknown) => log.warn({ event: 'probe-failed', err: describeError(e) }, 'scheduled probe failed'),
        );
        probeJob.start();
      }
    },
    recordPass(result, durationMs, at, driftKinds, extra = []) {
      if (metrics === null) return;
      const sample: PassSample =
        result === null
          ? { ok: false, durationSeconds: durationMs / 1000, at, families: [], findings: [], driftKinds: [], repaired: false, networks: [], hostContainers: [] }
          : {
              ok: true,
              durationSeconds: durationMs / 1000,
              at,
              // As the host stands after the pass: a repaired family is protected again unless something the pass cannot fix remains.
              families: FAMILIES.filter((f) => result.observation.families[f].present).map((family) => ({
                family,
                protected: !result.findings.some((x) => x.family === family && isFailure(x) && (!result.repaired || x.kind === 'table-unreadable' || x.kind === 'other-backend-undermining')),
              })),
              findings: [...result.findings, ...extra].map((f) => ({ id: f.id, severity: f.severity, status: f.status })),
              driftKinds,
              repaired: result.repaired,
              networks: result.plan.networks.map((n) => ({ coverage: n.coverage })),
              hostContainers: (result.hostNet?.containers ?? []).map((c) => ({ coverage: c.coverage })),
            };
      metrics.recordPass(sample);
      writeTextfile();
    },
    async close() {
      probeJob?.stop();
      await server?.server.close();
      await writing;
    },
  };
}
