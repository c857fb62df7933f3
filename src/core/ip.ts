/**
 * IP address text as iptables, nft and the config write it: which version it is, its
 * canonical form, its value as a number.
 *
 * Not node:net's isIP: its IPv6 test is a long regular expression that V8 compiles at the
 * first call, about 5 ms of every one-shot verb (bench: cpu profile of a converged apply).
 * IPv6 is read by the WHATWG URL parser instead (native code, no compile), after a check
 * of the characters: that parser drops tabs and newlines anywhere in its input and would
 * take "fd00::\n1". Zone ids (fe80::1%eth0), which node:net accepts, are refused: neither
 * iptables nor nft takes one in an address.
 */

const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
// Dotted decimal only, no leading zeros: what node:net accepts, and what iptables prints.
const IPV4 = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
const IPV6_CHARS = /^[0-9A-Fa-f:.]{2,45}$/;

/** 4 or 6 for an IPv4 or IPv6 address, 0 for anything else (a CIDR, a name, a zone id). */
export function ipVersion(text: string): 0 | 4 | 6 {
  if (IPV4.test(text)) return 4;
  return text.includes(':') && IPV6_CHARS.test(text) && URL.canParse(`http://[${text}]/`) ? 6 : 0;
}

/** IPv6 in the form iptables-save and nft print (RFC 5952: lowercase, the longest run of zeros as ::); anything else unchanged. */
export function canonicalAddress(address: string): string {
  if (ipVersion(address) !== 6) return address;
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

/** An IPv4 or IPv6 address as one number, to compare and order addresses; throws on anything else. */
export function ipToBigInt(ip: string): bigint {
  const version = ipVersion(ip);
  if (version === 4) return ip.split('.').reduce((acc, o) => (acc << 8n) + BigInt(Number(o)), 0n);
  if (version === 0) throw new Error(`not an IP address: ${JSON.stringify(ip)}`);
  // The canonical form has no embedded IPv4 (::ffff:1.2.3.4 is ::ffff:102:304) and at most one ::.
  const [head = '', tail] = canonicalAddress(ip).split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((acc, g) => (acc << 16n) + BigInt(parseInt(g, 16)), 0n);
}
