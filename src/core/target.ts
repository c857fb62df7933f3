import { canonicalAddress, ipVersion } from './ip.js';
import type { Family } from './family.js';
import { parsePort } from './endpoint.js';

/**
 * Where a blocked request goes.
 * - redirect: REDIRECT to the receiving bridge's own address on a port nothing listens
 *   on. The kernel answers with a RST (connection refused, at once), the packet never
 *   leaves the host, and no address outside the nat table has to be managed. It is
 *   decided per packet, so it covers bridges that do not exist yet.
 * - dnat: DNAT to an address of the operator's choosing (a metadata proxy, or the
 *   seed recipe's 1.1.1.1 for compatibility).
 */
export type Target =
  | { readonly kind: 'redirect'; readonly port: number }
  | { readonly kind: 'dnat'; readonly family: Family; readonly address: string; readonly port: number | null };

// Port 1 (tcpmux) is reserved and has no listener on a Linux host, so the redirected
// SYN meets an empty port and the container sees "connection refused".
export const DEFAULT_REDIRECT_PORT = 1;
export const DEFAULT_TARGET = 'redirect';

export function parseTarget(text: string): Target | string {
  if (text === 'redirect') return { kind: 'redirect', port: DEFAULT_REDIRECT_PORT };
  const redirect = /^redirect:(.*)$/.exec(text);
  if (redirect) {
    const port = parsePort(redirect[1] ?? '');
    return port === null ? 'has a redirect port that is not 1-65535' : { kind: 'redirect', port };
  }
  const dnat = /^dnat:(?:\[([^\]]+)\]|([^:]+))(?::([0-9]+))?$/.exec(text) ?? /^dnat:([0-9a-fA-F:]+)$/.exec(text);
  if (!dnat) return 'is not redirect, redirect:PORT or dnat:ADDRESS[:PORT]';
  const address = dnat[1] ?? dnat[2] ?? '';
  const version = ipVersion(address);
  if (version === 0) return `has a dnat address that is not an IP address: ${JSON.stringify(address)}`;
  const port = dnat[3] === undefined ? null : parsePort(dnat[3]);
  if (dnat[3] !== undefined && port === null) return 'has a dnat port that is not 1-65535';
  return { kind: 'dnat', family: version === 4 ? 'ipv4' : 'ipv6', address: canonicalAddress(address), port };
}

/** The target's arguments in the order iptables-save prints them. */
export function targetArgs(t: Target, family: Family): string[] {
  if (t.kind === 'redirect') return ['-j', 'REDIRECT', '--to-ports', String(t.port)];
  const addr = family === 'ipv6' && t.port !== null ? `[${t.address}]` : t.address;
  return ['-j', 'DNAT', '--to-destination', t.port === null ? addr : `${addr}:${t.port}`];
}

export function formatTarget(t: Target): string {
  if (t.kind === 'redirect') return `redirect:${t.port}`;
  const addr = t.family === 'ipv6' ? `[${t.address}]` : t.address;
  return t.port === null ? `dnat:${addr}` : `dnat:${addr}:${t.port}`;
}
