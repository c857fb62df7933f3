import { canonicalAddress, ipVersion } from './ip.js';
import { parsePort } from './endpoint.js';

/** Where the agent serves /metrics: an IP address (no brackets) and a TCP port. */
export interface MetricsListen {
  readonly host: string;
  readonly port: number;
}

/** The node_exporter textfile the agent rewrites after each pass. */
export interface MetricsTextfile {
  readonly path: string;
}

/** Loopback by default: a Prometheus on another host needs the operator to choose an address to expose. */
export const SUGGESTED_METRICS_LISTEN = '127.0.0.1:9469';

/**
 * Parses `--metrics-listen ADDR:PORT` (IPv6 in brackets: `[::1]:9469`). Only IP
 * addresses: a host name would be resolved at every start, and could resolve to an
 * address the operator did not mean to expose. Returns a reason string on failure, for
 * the config layer's `parsedBy`.
 */
export function parseMetricsListen(text: string): MetricsListen | string {
  const m = /^\[([^\]]+)\]:([^:]*)$/.exec(text) ?? /^([^:[\]]+):([^:]*)$/.exec(text);
  if (m === null) return `is not ADDRESS:PORT (IPv6 in brackets: [::1]:9469; suggested ${SUGGESTED_METRICS_LISTEN})`;
  const [, address = '', portText = ''] = m;
  const bracketed = text.startsWith('[');
  const version = ipVersion(address);
  if (version === 0) return `has an address that is not an IP address: ${JSON.stringify(address)} (suggested ${SUGGESTED_METRICS_LISTEN})`;
  if (version === 4 && bracketed) return 'has an IPv4 address in brackets: write ADDRESS:PORT';
  const port = parsePort(portText);
  if (port === null) return `has a port that is not 1-65535: ${JSON.stringify(portText)}`;
  return { host: canonicalAddress(address), port };
}

/**
 * Parses `--metrics-textfile PATH`: absolute, and named `*.prom`, since node_exporter's
 * textfile collector reads only those (the temp file written beside it is not, so the
 * collector never reads it half written).
 */
export function parseMetricsTextfile(text: string): MetricsTextfile | string {
  if (!text.startsWith('/')) return 'must be an absolute path';
  if (/[\0\n\r]/.test(text)) return 'must not contain a newline or NUL';
  if (text.endsWith('/')) return 'must name a file, not a directory';
  if (!text.endsWith('.prom')) return "must end in .prom (node_exporter's textfile collector reads only *.prom files)";
  return { path: text };
}

/** The exposition form of a listen address, for log lines: `[::1]:9469`. */
export function formatMetricsListen(l: MetricsListen): string {
  return ipVersion(l.host) === 6 ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
}
