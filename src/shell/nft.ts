import { CommandError } from '../errors.js';
import { type RunProcess, firstLine } from './exec.js';

/**
 * The native nftables ruleset, read through `nft` (nftables), argument arrays only. nft
 * joins its arguments into one command, so a table name is passed only when the caller
 * checked it is a plain identifier (core/nft-bypass isPlainNftName).
 */
export interface NftPort {
  /** `nft -j list chains`: every chain with its hook and priority, no rules; a few ms whatever the ruleset's size. */
  chains(): Promise<string>;
  /** `nft -j list table FAMILY NAME`. */
  tableJson(family: string, name: string): Promise<string>;
  /** `nft -a list table FAMILY NAME`: the text form with handles, for evidence. */
  tableText(family: string, name: string): Promise<string>;
  /** `nft -j list ruleset`, for a table whose name cannot be passed. */
  rulesetJson(): Promise<string>;
  /** `nft -a list ruleset`. */
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
    chains: () => nft(['-j', 'list', 'chains']),
    tableJson: (family, name) => nft(['-j', 'list', 'table', family, name]),
    tableText: (family, name) => nft(['-a', 'list', 'table', family, name]),
    rulesetJson: () => nft(['-j', 'list', 'ruleset']),
    rulesetText: () => nft(['-a', 'list', 'ruleset']),
  };
}
