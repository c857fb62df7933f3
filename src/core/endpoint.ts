import { canonicalAddress, ipVersion } from './ip.js';
import type { Family } from './family.js';

/** A metadata endpoint to hide: one address and TCP port. */
export interface Endpoint {
  readonly family: Family;
  readonly address: string;
  readonly port: number;
}

export const DEFAULT_ENDPOINTS: readonly string[] = ['169.254.169.254:80', '[fd00:ec2::254]:80'];

export function parsePort(text: string): number | null {
  if (!/^[0-9]{1,5}$/.test(text)) return null;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : null;
}

/**
 * Parses `ADDR[:PORT]` (IPv6 in brackets: `[fd00:ec2::254]:80`); the port defaults to 80.
 * Returns a reason string on failure so the config layer can name the key.
 */
export function parseEndpoint(text: string): Endpoint | string {
  const m = /^\[([^\]]+)\](?::([^:]+))?$/.exec(text) ?? /^([^:[\]]+)(?::([^:]+))?$/.exec(text);
  const bare = m === null && ipVersion(text) === 6 ? text : null;
  const address = bare ?? m?.[1];
  const portText = bare === null ? m?.[2] : undefined;
  if (address === undefined) return 'is not ADDRESS[:PORT] (IPv6 in brackets: [fd00:ec2::254]:80)';
  const version = ipVersion(address);
  if (version === 0) return `has an address that is not an IP address: ${JSON.stringify(address)}`;
  const port = portText === undefined ? 80 : parsePort(portText);
  if (port === null) return `has a port that is not 1-65535: ${JSON.stringify(portText)}`;
  return { family: version === 4 ? 'ipv4' : 'ipv6', address: canonicalAddress(address), port };
}


export function hostPrefix(family: Family): number {
  return family === 'ipv4' ? 32 : 128;
}

export function formatEndpoint(e: Endpoint): string {
  return e.family === 'ipv6' ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}
