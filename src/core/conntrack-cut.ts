import { ipVersion } from './ip.js';
import type { Family } from './family.js';

/** One tracked TCP connection, as `conntrack -L` prints its original direction. */
export interface TrackedFlow {
  readonly family: Family;
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
}

const port = (v: string | undefined): number | null => (v !== undefined && /^[0-9]{1,5}$/.test(v) && Number(v) <= 65535 ? Number(v) : null);

/**
 * The flows of a `conntrack -L` listing (untrusted text): each line's first src=, dst=,
 * sport= and dport= are the original direction. Lines that do not parse are left out.
 */
export function parseConntrackList(text: string): TrackedFlow[] {
  const out: TrackedFlow[] = [];
  for (const line of text.split('\n')) {
    const field = (k: string): string | undefined => new RegExp(`(?:^|\\s)${k}=(\\S+)`).exec(line)?.[1];
    const src = field('src');
    const dst = field('dst');
    const sport = port(field('sport'));
    const dport = port(field('dport'));
    if (src === undefined || dst === undefined || sport === null || dport === null) continue;
    const v = ipVersion(src);
    if (v === 0 || v !== ipVersion(dst)) continue;
    out.push({ family: v === 4 ? 'ipv4' : 'ipv6', src, dst, sport, dport });
  }
  return out;
}

/**
 * The flows to cut: those that came from containers, not from the host's own
 * processes. A flow whose source is one of the host's addresses is the host's (or a
 * host-network container's, which the filter OUTPUT rule cuts packet by packet anyway);
 * everything else was forwarded for a container, VM or other namespace.
 */
export function flowsToCut(flows: readonly TrackedFlow[], localAddresses: ReadonlySet<string>): TrackedFlow[] {
  return flows.filter((f) => !localAddresses.has(f.src));
}
