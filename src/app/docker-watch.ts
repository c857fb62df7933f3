import type { Logger } from 'pino';
import type { DockerPort, NetworkEvent } from '../shell/docker.js';

export interface Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000 };

/**
 * Keeps a subscription to Docker's network events alive. When Docker is down or
 * restarts, it logs once, retries with capped exponential backoff, and on reconnect
 * calls `onConnected` so the loop re-lists networks: events missed while disconnected
 * do not matter because every pass reads the full list.
 */
export function watchDocker(docker: DockerPort, log: Logger, handlers: { onEvent(e: NetworkEvent): void; onConnected(): void }, backoff: Backoff = DEFAULT_BACKOFF): { stop(): void } {
  let stopped = false;
  let unsubscribe: (() => void) | null = null;
  let timer: NodeJS.Timeout | null = null;
  let delay = backoff.initialMs;
  let everConnected = false;
  let reportedDown = false;

  const retry = (): void => {
    if (stopped) return;
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, backoff.maxMs);
  };

  const down = (why: string): void => {
    if (!reportedDown) {
      log.warn({ event: 'docker-disconnected', why }, everConnected ? 'lost the Docker event stream; keeping the rules in place and reconnecting' : 'Docker is not reachable; the protection does not depend on it; retrying');
      reportedDown = true;
    }
    retry();
  };

  async function connect(): Promise<void> {
    timer = null;
    if (stopped) return;
    try {
      const stream = await docker.watchNetworks(handlers.onEvent, (err) => {
        unsubscribe = null;
        if (!stopped) down(err?.message ?? 'event stream ended');
      });
      // stop() ran while the stream was being opened: it found nothing to close, so
      // close what just arrived (its socket would otherwise keep the process alive).
      if (stopped) {
        stream();
        return;
      }
      unsubscribe = stream;
      // Subscribe first, then list: a network created between the two is still seen.
      const again = everConnected;
      everConnected = true;
      reportedDown = false;
      delay = backoff.initialMs;
      log.info({ event: again ? 'docker-reconnected' : 'docker-connected' }, again ? 'Docker is back; re-reading its networks' : 'watching Docker network events');
      handlers.onConnected();
    } catch (e) {
      if (!stopped) down((e as Error).message);
    }
  }

  void connect();
  return {
    stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      unsubscribe?.();
      unsubscribe = null;
    },
  };
}
