import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
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
   * could not be listed (it does not exist, or the table does not). A null chain lists
   * the whole table (`-S` alone).
   */
  listChains(family: Family, backend: Backend, table: string, chains: readonly (string | null)[]): Promise<(string | null)[]>;
  /** Whether any legacy table exists in this network namespace (read from /proc, no process; true when /proc will not say). */
  legacyLoaded(family: Family): Promise<boolean>;
  /** Whether this network namespace has the family at all (an IPv6-less kernel has no /proc/net/if_inet6). */
  familyPresent(family: Family): Promise<boolean>;
}

const PREFIX: Record<Family, string> = { ipv4: 'iptables', ipv6: 'ip6tables' };

export function toolName(family: Family, backend: Backend, verb: 'save' | 'restore'): string {
  return `${PREFIX[family]}-${backend}-${verb}`;
}

// iptables' RESOURCE_PROBLEM: under legacy this is also what a lock wait that ran out
// returns, so it means "lock held" only when the lock is found held (lockHeld below).
const EXIT_RESOURCE = 4;
// CAP_NET_ADMIN's bit in /proc/self/status CapEff.
const CAP_NET_ADMIN = 12n;

/** Whether this process may change the tables at all: a probe of its capabilities, not a reading of stderr. */
async function hasNetAdmin(): Promise<boolean> {
  try {
    const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(await readFile('/proc/self/status', 'utf8'))?.[1];
    return hex !== undefined && ((BigInt(`0x${hex}`) >> CAP_NET_ADMIN) & 1n) === 1n;
  } catch {
    return true; // no /proc to ask: let the failure speak for itself
  }
}

export function createIptables(run: RunProcess, opts: { lockWaitSeconds: number; procNet?: string }): IptablesPort {
  const procNet = opts.procNet ?? '/proc/net';
  /** Probes the xtables lock (util-linux flock, non-blocking): held, free, or unknown (no flock). */
  const lockHeld = async (): Promise<boolean | null> => {
    const file = process.env.XTABLES_LOCKFILE ?? '/run/xtables.lock';
    try {
      const r = await run('flock', ['-n', '-E', '75', file, 'true'], { timeoutMs: 5_000 });
      return r.code === 75 ? true : r.code === 0 ? false : null;
    } catch {
      return null;
    }
  };
  const denied = (tool: string, why: string, stderr: string): CommandError =>
    new CommandError(`${tool}: permission denied (run as root or with CAP_NET_ADMIN): ${why}`, 'permission-denied', tool, stderr);
  return {
    async save(family, backend) {
      const tool = toolName(family, backend, 'save');
      const r = await run(tool, []);
      if (r.code === 0) return r.stdout;
      const why = firstLine(r.stderr);
      if (!(await hasNetAdmin())) throw denied(tool, why, r.stderr);
      // Any other failure: the tables could not be read (the caller fails closed on it).
      throw new CommandError(`${tool} failed (exit ${r.code}): ${why}`, 'command-failed', tool, r.stderr);
    },
    async restore(family, backend, payload) {
      const tool = toolName(family, backend, 'restore');
      const r = await run(tool, ['--noflush', '-w', String(opts.lockWaitSeconds)], { input: payload });
      if (r.code === 0) return;
      const why = firstLine(r.stderr);
      if (!(await hasNetAdmin())) throw denied(tool, why, r.stderr);
      // iptables-nft takes no xtables lock (nft commits are transactions): its exit 4 is a rule the kernel refused.
      if (backend === 'legacy' && r.code === EXIT_RESOURCE && (await lockHeld()) === true) {
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
          // Any failure (the tool missing too) reads as "not there": the pass that sees it
          // escalates to a full read, which says what is wrong.
          const r = await run(tool, ['-w', String(opts.lockWaitSeconds), '-t', table, '-S', ...(chain === null ? [] : [chain])]).catch(() => null);
          return r !== null && r.code === 0 ? r.stdout : null;
        }),
      );
    },
    // Both read /proc synchronously: the kernel makes these files in memory, and a round
    // trip through libuv's threadpool put the saves that wait on them behind the other
    // reads of a pass (bench: the timeline of a converged apply).
    async legacyLoaded(family) {
      const file = `${procNet}/${family === 'ipv4' ? 'ip_tables_names' : 'ip6_tables_names'}`;
      try {
        return readFileSync(file, 'utf8').split('\n').some((t) => t === 'nat' || t === 'filter' || t === 'raw');
      } catch (e) {
        // The file is root-only (0440): unreadable says nothing about the tables. Reading
        // them then fails too, and that failure is reported (fail closed), where "not
        // loaded" would have passed off unread tables as empty ones.
        const code = (e as NodeJS.ErrnoException).code;
        return code === 'EACCES' || code === 'EPERM';
      }
    },
    async familyPresent(family) {
      if (family === 'ipv4') return true;
      return existsSync(`${procNet}/if_inet6`);
    },
  };
}
