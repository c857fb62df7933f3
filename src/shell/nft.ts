import { CommandError } from '../errors.js';
import { type RunProcess, firstLine } from './exec.js';

/** The native nftables ruleset, read through `nft` (nftables); argument arrays only, no names from the ruleset. */
export interface NftPort {
  /** `nft -j list tables`: one small process, to see whether any table is not iptables-nft's. */
  tables(): Promise<string>;
  /** `nft -j list ruleset`. */
  rulesetJson(): Promise<string>;
  /** `nft -a list ruleset`: the text form with handles, for evidence. */
  rulesetText(): Promise<string>;
}

const TIMEOUT_MS = 30_000;

export function createNft(run: RunProcess): NftPort {
  const nft = async (args: readonly string[]): Promise<string> => {
    const r = await run('nft', args, { timeoutMs: TIMEOUT_MS });
    if (r.code === 0) return r.stdout;
    // Any failure means the ruleset was not read (the caller fails closed on it); a missing
    // nft rejects with CommandError 'command-missing' from runProcess.
    throw new CommandError(`nft ${args.join(' ')} failed (exit ${r.code}): ${firstLine(r.stderr)}`, 'command-failed', 'nft', r.stderr);
  };
  return {
    tables: () => nft(['-j', 'list', 'tables']),
    rulesetJson: () => nft(['-j', 'list', 'ruleset']),
    rulesetText: () => nft(['-a', 'list', 'ruleset']),
  };
}
