import { access, readFile } from 'node:fs/promises';
import { CommandError } from '../errors.js';
import type { Backend, Family } from '../core/family.js';
import { type RunProcess, firstLine } from './exec.js';

/** The tables through iptables-save / iptables-restore of one backend and family. */
export interface IptablesPort {
  /** The `iptables-save` text of every table that backend holds (one process), or null when the family is unavailable. */
  save(family: Family, backend: Backend): Promise<string | null>;
  /** Applies one `--noflush` transaction; all or nothing. */
  restore(family: Family, backend: Backend, payload: string): Promise<void>;
  /**
   * `iptables -t TABLE -S CHAIN` for each chain, in parallel: the rules of just the chains
   * that decide (under nft this reads those chains, not the table). Null for a chain that
   * could not be listed (it does not exist, or the table does not).
   */
  listChains(family: Family, backend: Backend, table: string, chains: readonly string[]): Promise<(string | null)[]>;
  /** Whether any legacy table exists in this network namespace (read from /proc, no process). */
  legacyLoaded(family: Family): Promise<boolean>;
  /** Whether this network namespace has the family at all (an IPv6-less kernel has no /proc/net/if_inet6). */
  familyPresent(family: Family): Promise<boolean>;
}

const PREFIX: Record<Family, string> = { ipv4: 'iptables', ipv6: 'ip6tables' };

export function toolName(family: Family, backend: Backend, verb: 'save' | 'restore'): string {
  return `${PREFIX[family]}-${backend}-${verb}`;
}

// Messages iptables prints when the table (or the whole family) is not there.
const UNAVAILABLE = /table does not exist|can't initialize|Could not fetch rule set|not supported|No such file or directory|Unknown error/i;
const PERMISSION = /Permission denied|must be root|Operation not permitted/i;
const LOCK = /xtables lock|holding the xtables|Resource temporarily unavailable/i;

export function createIptables(run: RunProcess, opts: { lockWaitSeconds: number; procNet?: string }): IptablesPort {
  const procNet = opts.procNet ?? '/proc/net';
  return {
    async save(family, backend) {
      const tool = toolName(family, backend, 'save');
      const r = await run(tool, []);
      if (r.code === 0) return r.stdout;
      const why = firstLine(r.stderr);
      if (PERMISSION.test(r.stderr)) throw new CommandError(`${tool}: permission denied (run as root or with CAP_NET_ADMIN): ${why}`, 'permission-denied', tool, r.stderr);
      if (UNAVAILABLE.test(r.stderr) || r.stdout === '') return null;
      throw new CommandError(`${tool} failed (exit ${r.code}): ${why}`, 'command-failed', tool, r.stderr);
    },
    async restore(family, backend, payload) {
      const tool = toolName(family, backend, 'restore');
      const r = await run(tool, ['--noflush', '-w', String(opts.lockWaitSeconds)], { input: payload });
      if (r.code === 0) return;
      const why = firstLine(r.stderr);
      if (PERMISSION.test(r.stderr)) throw new CommandError(`${tool}: permission denied (run as root or with CAP_NET_ADMIN): ${why}`, 'permission-denied', tool, r.stderr);
      if (r.code === 4 || LOCK.test(r.stderr)) {
        throw new CommandError(`${tool}: the xtables lock was held by another process for ${opts.lockWaitSeconds}s; nothing was applied`, 'lock-held', tool, r.stderr);
      }
      const at = /line:? (\d+)/i.exec(r.stderr)?.[1];
      const line = at === undefined ? '' : ` (payload line ${at}: ${payload.split('\n')[Number(at) - 1] ?? ''})`;
      throw new CommandError(`${tool} rejected the transaction, nothing was applied: ${why}${line}`, 'restore-failed', tool, r.stderr);
    },
    async listChains(family, backend, table, chains) {
      const tool = `${PREFIX[family]}-${backend}`;
      return Promise.all(
        chains.map(async (chain) => {
          const r = await run(tool, ['-w', String(opts.lockWaitSeconds), '-t', table, '-S', chain]);
          // Any failure reads as "not there": the pass that sees it escalates to a full read.
          return r.code === 0 ? r.stdout : null;
        }),
      );
    },
    async legacyLoaded(family) {
      const file = `${procNet}/${family === 'ipv4' ? 'ip_tables_names' : 'ip6_tables_names'}`;
      try {
        return (await readFile(file, 'utf8')).split('\n').some((t) => t === 'nat' || t === 'filter' || t === 'raw');
      } catch {
        return false;
      }
    },
    async familyPresent(family) {
      if (family === 'ipv4') return true;
      try {
        await access(`${procNet}/if_inet6`);
        return true;
      } catch {
        return false;
      }
    },
  };
}
