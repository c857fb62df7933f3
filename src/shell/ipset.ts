import { CommandError } from '../errors.js';
import { type ProcessResult, type RunProcess, firstLine } from './exec.js';

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
  /** Runs ipset; null when the tool is not installed (no set of ours can exist then). */
  const runIfInstalled = async (args: readonly string[]): Promise<ProcessResult | null> => {
    try {
      return await run('ipset', args);
    } catch (e) {
      if (e instanceof CommandError && e.code === 'command-missing') return null;
      throw e;
    }
  };
  return {
    async save(name) {
      const r = await runIfInstalled(['save', name]);
      if (r === null) return { available: false, why: 'the ipset tool is not installed' };
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
      const r = await runIfInstalled(['destroy', name]);
      if (r === null || MISSING.test(r.stderr)) return false;
      if (r.code === 0) return true;
      throw fail('destroy', r);
    },
  };
}
