import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import { formatMetricsListen, type MetricsListen } from '../core/metrics-settings.js';
import { ListenError } from '../errors.js';
import { type FilesPort, files as realFiles } from './files.js';
import type { Metrics } from './metrics.js';

/** A running /metrics server. */
export interface MetricsServer {
  /** The address actually bound (the port is the kernel's choice when 0 was asked for). */
  readonly address: MetricsListen;
  /** Stops listening and cuts open connections (a scraper keeps them alive); resolves once closed. */
  close(): Promise<void>;
}

// A scrape takes milliseconds; anything slower is a stuck or hostile client, and the
// agent on every host must not hold sockets for it.
const REQUEST_TIMEOUT_MS = 10_000;
const MAX_CONNECTIONS = 16;

/**
 * Serves `GET /metrics` (and HEAD) with the registry's content type; every other path or
 * method gets 404. Rejects with a ListenError when the address cannot be bound.
 */
export async function serveMetrics(metrics: Metrics, listen: MetricsListen): Promise<MetricsServer> {
  const server = createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS }, (req, res) => void answer(metrics, req, res));
  server.maxConnections = MAX_CONNECTIONS;
  server.keepAliveTimeout = 65_000; // longer than a scrape interval, so a scraper keeps one connection
  await new Promise<void>((resolve, reject) => {
    const failed = (e: NodeJS.ErrnoException): void => reject(new ListenError(`cannot serve metrics on ${formatMetricsListen(listen)}: ${e.code ?? e.message}`));
    server.once('error', failed);
    server.listen({ host: listen.host, port: listen.port, exclusive: true }, () => {
      server.off('error', failed);
      resolve();
    });
  });
  // After start, a socket error is one client's problem; it must never end the agent.
  server.on('error', () => {});
  server.on('clientError', (_e, socket) => socket.destroy());
  const bound = server.address();
  const address = bound !== null && typeof bound === 'object' ? { host: bound.address, port: bound.port } : listen;
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function answer(metrics: Metrics, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '').split('?', 1)[0];
  if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found: imds-guard serves GET /metrics\n');
    return;
  }
  try {
    const body = await metrics.scrape();
    res.writeHead(200, { 'Content-Type': metrics.contentType, 'Content-Length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  } catch (e) {
    res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`cannot render metrics: ${(e as Error).message}\n`);
  }
}

// One write at a time per path: two writes started in the same millisecond would pick
// the same temp name, and the later rename must not be overtaken by an older text.
const writing = new Map<string, Promise<void>>();

/**
 * Writes the imds-guard metrics to `path` for node_exporter's textfile collector: a temp
 * file in the same directory, fsync, rename, so the collector reads the old text or the
 * new one, never half of one. `path` should end in .prom (parseMetricsTextfile checks).
 */
export async function writeTextfile(metrics: Metrics, path: string, files: Pick<FilesPort, 'writeAtomic'> = realFiles): Promise<void> {
  const previous = writing.get(path) ?? Promise.resolve();
  const next = previous.catch(() => {}).then(async () => files.writeAtomic(path, await metrics.textfile(), 0o644));
  writing.set(path, next);
  try {
    await next;
  } finally {
    if (writing.get(path) === next) writing.delete(path);
  }
}
