import { type ChainDiff, jumpsOf } from './chain-compare.js';
import { OWNED_CHAINS, type OwnedChainName } from './names.js';
import { joinArgs, ruleTarget } from './rule.js';
import { type SavedTable, type TableName, chainRules, chainsJumpingTo, hasChain } from './saved-table.js';

/**
 * The one `iptables-restore --noflush` transaction that brings one table of one family
 * to the desired state, or null when it is already there (a converged pass writes nothing).
 *
 * Like kube-proxy, we declare the chains we own (`:IMDS-GUARD - [0:0]`, which flushes a
 * chain under --noflush) and write their whole content, so each is always exactly what
 * the code says. Of a foreign chain only our own jump is ever named: deleted by its text,
 * inserted at the top (the hook's, and DOCKER-USER's when Docker made that chain). Jumps are deleted by their exact saved arguments, never by number: a
 * number read before the transaction may point at someone else's rule by the time it
 * runs, while a vanished rule makes the whole transaction fail and the next pass look
 * again. Owned chains this table holds but the desired state no longer has (host-network
 * protection switched off) are removed in the same transaction.
 */
/**
 * Whether a rule read back from the table can be named in a payload: iptables-restore
 * reads one command per line, so an argument holding a line break (a planted comment)
 * would smuggle a command of its own into our transaction. Such a rule is never named;
 * it stays reported with its evidence.
 */
export function payloadSafe(args: readonly string[]): boolean {
  return args.every((a) => !/[\x00-\x1f\x7f]/.test(a));
}

export function renderTableRestore(table: TableName, diffs: readonly ChainDiff[], saved: SavedTable): string | null {
  const lines: string[] = [];
  for (const d of diffs) {
    if (d.rewriteChain) {
      lines.push(`:${d.desired.chain} - [0:0]`);
      for (const r of d.desired.rules) lines.push(`-A ${d.desired.chain} ${joinArgs(r.args)}`);
    }
  }
  for (const d of diffs) {
    for (const jump of jumpsOf(d)) {
      for (const j of jump.toDelete.filter((r) => payloadSafe(r.args))) lines.push(`-D ${jump.from} ${joinArgs(j.args)}`);
      if (jump.insert) lines.push(`-I ${jump.from} 1 ${joinArgs(d.desired.jumpArgs)}`);
    }
  }
  const wanted = new Set<string>(diffs.map((d) => d.desired.chain));
  lines.push(...removalLines(saved, OWNED_CHAINS.filter((c) => !wanted.has(c))));
  if (lines.length === 0) return null;
  return [`*${table}`, ...lines, 'COMMIT', ''].join('\n');
}

/**
 * The transaction that deletes everything imds-guard owns in this table: every rule
 * that jumps to one of our chains (wherever someone put it, since a chain cannot be
 * deleted while referenced), then the chains. Null when there is nothing of ours.
 */
export function renderRemoval(saved: SavedTable): string | null {
  const lines = removalLines(saved, OWNED_CHAINS);
  return lines.length === 0 ? null : [`*${saved.name}`, ...lines, 'COMMIT', ''].join('\n');
}

function removalLines(saved: SavedTable, chains: readonly OwnedChainName[]): string[] {
  const present = chains.filter((c) => hasChain(saved, c) || chainsJumpingTo(saved, c).length > 0);
  if (present.length === 0) return [];
  const targets = new Set<string>(present);
  const refs = [...new Set(present.flatMap((c) => chainsJumpingTo(saved, c)))]
    .filter((c) => !targets.has(c))
    .flatMap((c) => chainRules(saved, c).filter((r) => targets.has(ruleTarget(r) ?? '') && payloadSafe(r.args)));
  const lines = refs.map((r) => `-D ${r.chain} ${joinArgs(r.args)}`);
  // Flush them all before deleting any: a chain still jumped to from another of ours
  // cannot be deleted (iptables-nft-restore: CHAIN_DEL failed, Device or resource busy).
  const chainsHere = present.filter((x) => hasChain(saved, x));
  lines.push(...chainsHere.map((c) => `:${c} - [0:0]`), ...chainsHere.map((c) => `-X ${c}`));
  return lines;
}
