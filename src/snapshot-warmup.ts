import type { Logger } from 'pino';
import { audit } from './app/audit.js';
import type { Ports } from './app/ports.js';
import { cheapBackend, reconcile } from './app/reconcile.js';
import { summarizeApply } from './app/summary.js';
import type { CgroupPath } from './core/cgroup.js';
import { resolveConfig } from './core/config.js';
import type { Family } from './core/family.js';
import { renderReportText } from './core/report.js';

/**
 * Runs the one-shot verbs' code once at snapshot build time (src/snapshot.ts), against a
 * made-up host held in memory, so that V8 has compiled their functions when it saves the
 * heap: V8 compiles a function at its first call, and a snapshot keeps what was compiled
 * (a measured example: 400 small functions, 8.7 ms at their first call from a snapshot
 * without the warm-up, 0.8 ms with it). Every port below is a constant or a no-op:
 * nothing is spawned, opened or written, nothing of the build machine is read, and
 * nothing the passes return is kept.
 *
 * The host: a Docker host under legacy with a little of Docker's nat and filter tables,
 * IPv6 with empty tables, no nft tables. A first pass protects it (its transactions go
 * nowhere but into the made-up tables, roughly as iptables-restore would put them); a
 * second pass, an audit and the printed summaries then run on the protected host, as a
 * converged apply does.
 */
export async function warmOneShotVerbs(): Promise<void> {
  const config = resolveConfig([{ source: 'snapshot warm-up', values: { backend: 'auto', docker: false, bootScript: 'never', cgroupParent: '/docker', conntrack: true } }]);
  const host = madeUpHost();
  const first = await reconcile(config, host.ports);
  summarizeApply(config, first, false);
  const cheap = await cheapBackend(config, host.ports);
  const second = await reconcile(config, host.ports, cheap === null ? {} : { cheap: { backend: cheap, native: true } });
  summarizeApply(config, second, false);
  summarizeApply(config, second, true);
  renderReportText(await audit(config, host.ports, '0.0.0', () => new Date(0)));
}

const DOCKER_NAT = [
  '*nat',
  ':PREROUTING ACCEPT [0:0]',
  ':INPUT ACCEPT [0:0]',
  ':OUTPUT ACCEPT [0:0]',
  ':POSTROUTING ACCEPT [0:0]',
  ':DOCKER - [0:0]',
  '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER',
  '-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER',
  '-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE',
  '-A DOCKER -i docker0 -j RETURN',
  '-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80',
  'COMMIT',
];
const DOCKER_FILTER = [
  '*filter',
  ':INPUT ACCEPT [0:0]',
  ':FORWARD DROP [0:0]',
  ':OUTPUT ACCEPT [0:0]',
  ':DOCKER-USER - [0:0]',
  '-A FORWARD -j DOCKER-USER',
  '-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
  '-A DOCKER-USER -j RETURN',
  'COMMIT',
];
const NO_NFT_TABLES = JSON.stringify({ nftables: [{ metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } }] });

/** Table sections as lines, changed by restore payloads the way `iptables-restore --noflush` would (enough for a warm-up). */
function madeUpHost(): { ports: Ports } {
  const tables: Record<Family, Map<string, string[]>> = {
    ipv4: new Map([
      ['nat', DOCKER_NAT.slice(1, -1)],
      ['filter', DOCKER_FILTER.slice(1, -1)],
    ]),
    ipv6: new Map([
      ['nat', [':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]']],
      ['filter', [':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]']],
    ]),
  };
  const save = (f: Family): string => [...tables[f]].flatMap(([name, lines]) => [`*${name}`, ...lines, 'COMMIT']).join('\n') + '\n';
  const listing = (f: Family, table: string, chain: string | null): string | null => {
    const lines = tables[f].get(table);
    if (lines === undefined) return null;
    const declared = (c: string): boolean => lines.some((l) => l.startsWith(`:${c} `));
    if (chain !== null && !declared(chain)) return null;
    const rules = lines.filter((l) => l.startsWith('-A ') && (chain === null || l.startsWith(`-A ${chain} `)));
    const decls = lines.filter((l) => l.startsWith(':') && (chain === null || l.startsWith(`:${chain} `))).map((l) => (/ (ACCEPT|DROP) /.test(l) ? `-P ${l.slice(1).split(' ')[0]} ${l.split(' ')[1]}` : `-N ${l.slice(1).split(' ')[0]}`));
    return [...decls, ...rules].join('\n') + '\n';
  };
  const restore = (f: Family, payload: string): void => {
    const [head, ...body] = payload.split('\n');
    const name = (head ?? '').slice(1);
    const lines = tables[f].get(name) ?? [];
    tables[f].set(name, lines);
    for (const l of body) {
      const words = l.split(' ');
      if (l.startsWith(':')) {
        if (!lines.some((x) => x.startsWith(`${words[0]} `))) lines.splice(lines.findIndex((x) => x.startsWith('-A ')) >>> 0, 0, `${words[0]} - [0:0]`);
      } else if (l.startsWith('-A ')) lines.push(l);
      else if (l.startsWith('-I ')) {
        const at = lines.findIndex((x) => x.startsWith(`-A ${words[1]} `));
        lines.splice(at < 0 ? lines.length : at, 0, ['-A', words[1], ...words.slice(3)].join(' '));
      } else if (l.startsWith('-D ')) {
        const text = ['-A', ...words.slice(1)].join(' ');
        const at = lines.indexOf(text);
        if (at >= 0) lines.splice(at, 1);
      } else if (l.startsWith('-F ')) tables[f].set(name, lines.filter((x) => !x.startsWith(`-A ${words[1]} `)));
    }
  };
  const noop = (): void => {};
  const log = { level: 'silent', trace: noop, debug: noop, info: noop, warn: noop, error: noop, fatal: noop, child: () => log } as unknown as Logger;
  const ports: Ports = {
    iptables: {
      save: async (f) => save(f),
      restore: async (f, _b, payload) => restore(f, payload),
      listChains: async (f, _b, table, chains) => chains.map((c) => listing(f, table, c)),
      legacyLoaded: async () => true,
      familyPresent: async () => true,
    },
    nft: { chains: async () => NO_NFT_TABLES, tableJson: async () => NO_NFT_TABLES, tableText: async () => '', rulesetJson: async () => NO_NFT_TABLES, rulesetText: async () => '' },
    files: { read: async () => null, exists: async () => false, writeAtomic: async () => {}, remove: async () => {}, ensureSymlink: async () => {} },
    cgroups: {
      hierarchy: async () => ({ root: '/sys/fs/cgroup', problem: null }),
      inode: async () => 4242,
      ensureDir: async () => true,
      cgroupOfPid: async () => ({ ok: true, path: '/docker' as CgroupPath }),
      hasCgroupMatch: async () => ({ available: true, why: 'snapshot warm-up' }),
    },
    capabilities: { cgroupMatch: async () => ({ available: true, why: 'snapshot warm-up' }) },
    conntrack: { flush: async () => ({ deleted: 0 }) },
    docker: null,
    log,
  };
  return { ports };
}
