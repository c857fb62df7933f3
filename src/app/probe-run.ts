import { setMaxListeners } from 'node:events';
import type { Endpoint } from '../core/endpoint.js';
import type { ProbeOutcome, ProbeTarget } from '../core/probe-report.js';
import type { ProbeFn } from '../shell/probe.js';

export interface RunProbesOptions {
  /** Children at once. Each is a node start-up (CPU-bound), so more than a few per core only queues. */
  readonly concurrency: number;
  /** Per connection. */
  readonly timeoutMs: number;
  /** The whole run, whatever the probes do: `--probe` must be safe on a production host. */
  readonly totalBudgetMs: number;
}

export const PROBE_DEFAULTS: RunProbesOptions = { concurrency: 8, timeoutMs: 1000, totalBudgetMs: 5000 };

/** Below this, a fresh child could not even start before the deadline: the target is reported, not tried. */
const MIN_START_MS = 50;

/**
 * Probes every target, at most `concurrency` at a time, and returns within
 * `totalBudgetMs` (plus a few ms of bookkeeping) whatever the probe function does:
 * at the deadline the running probes are aborted through their signal, and a probe that
 * ignores it is answered `not-probed` anyway. A probe that throws is `not-probed` too.
 * Outcomes come back in target order, each target's in endpoint order.
 */
export async function runProbes(targets: readonly ProbeTarget[], endpoints: readonly Endpoint[], probe: ProbeFn, opts: RunProbesOptions = PROBE_DEFAULTS): Promise<ProbeOutcome[]> {
  const started = performance.now();
  const budget = new AbortController();
  // Each running probe listens on the one budget signal.
  setMaxListeners(Math.max(10, opts.concurrency + 2), budget.signal);
  let expired!: () => void;
  const deadline = new Promise<'expired'>((resolve) => {
    expired = () => resolve('expired');
  });
  const timer = setTimeout(() => {
    budget.abort();
    expired();
  }, opts.totalBudgetMs);
  const results: ProbeOutcome[][] = targets.map(() => []);
  const notProbed = (t: ProbeTarget, reason: string): ProbeOutcome[] => endpoints.map((endpoint) => ({ network: t.network, container: t.container, hostNetwork: t.hostNetwork, endpoint, result: 'not-probed', reason }));

  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < targets.length; i = next++) {
      const t = targets[i];
      if (t === undefined) continue;
      const left = opts.totalBudgetMs - (performance.now() - started);
      if (budget.signal.aborted || left < MIN_START_MS) {
        results[i] = notProbed(t, `the probe time budget (${opts.totalBudgetMs} ms) ran out before this network`);
        continue;
      }
      const attempt = probe(t, endpoints, { timeoutMs: Math.min(opts.timeoutMs, left), signal: budget.signal }).catch((e: unknown) => notProbed(t, `the probe failed: ${e instanceof Error ? e.message : String(e)}`));
      const r = await Promise.race([attempt, deadline]);
      results[i] = r === 'expired' ? notProbed(t, `the probe time budget (${opts.totalBudgetMs} ms) ran out during this network`) : r;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency, targets.length)) }, worker));
  } finally {
    clearTimeout(timer);
  }
  return results.flat();
}
