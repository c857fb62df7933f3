import { CommandError } from '../errors.js';
import { type RunProcess, firstLine } from './exec.js';

export type SetRead = { readonly available: false; readonly why: string } | { readonly available: true; readonly text: string | null };

/** Our sets through `ipset save` / `ipset restore`, each one process with an argument array. */
export interface IpsetPort {
  /** `ipset save NAME`: the text, null when the set does not exist, or why this host cannot hold sets. */
  save(name: string): Promise<SetRead>;
  /** Applies an `ipset -exist restore` payload: adding a member that is there or deleting one that is not is no error. */
  restore(payload: string): Promise<void>;
  /** Destroys a set (it must no longer be named by a rule); false when it was not there or ipset is missing. */
  destroy(name: string): Promise<boolean>;
}

const MISSING = /does not exist/i;
const PERMISSION = /Operation not permitted|Permission denied/i;
// The ipset tool is there but the kernel has no ip_set support (or no protocol match).
const NO_KERNEL = /Cannot open session to kernel|protocol|Kernel support|Address family not supported/i;

export function createIpset(run: RunProcess): IpsetPort {
  const fail = (verb: string, r: { code: number; stderr: string }): CommandError => {
    const why = firstLine(r.stderr);
    if (PERMISSION.test(r.stderr)) return new CommandError(`ipset ${verb}: permission denied (run as root or with CAP_NET_ADMIN): ${why}`, 'permission-denied', 'ipset', r.stderr);
    return new CommandError(`ipset ${verb} failed (exit ${r.code}): ${why}`, verb === 'restore' ? 'restore-failed' : 'command-failed', 'ipset', r.stderr);
  };
  return {
    async save(name) {
      let r;
      try {
        r = await run('ipset', ['save', name]);
      } catch (e) {
        if (e instanceof CommandError && e.code === 'command-missing') return { available: false, why: 'the ipset tool is not installed' };
        throw e;
      }
      if (r.code === 0) return { available: true, text: r.stdout };
      if (MISSING.test(r.stderr)) return { available: true, text: null };
      if (NO_KERNEL.test(r.stderr) && !PERMISSION.test(r.stderr)) return { available: false, why: firstLine(r.stderr) };
      throw fail('save', r);
    },
    async restore(payload) {
      const r = await run('ipset', ['-exist', 'restore'], { input: payload });
      if (r.code !== 0) throw fail('restore', r);
    },
    async destroy(name) {
      let r;
      try {
        r = await run('ipset', ['destroy', name]);
      } catch (e) {
        if (e instanceof CommandError && e.code === 'command-missing') return false;
        throw e;
      }
      if (r.code === 0) return true;
      if (MISSING.test(r.stderr)) return false;
      throw fail('destroy', r);
    },
  };
}
