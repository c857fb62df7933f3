import type { DesiredFamily } from './desired.js';
import type { NatComparison } from './nat-compare.js';
import { type NatTable, chainRules, chainsJumpingTo, hasChain } from './nat-table.js';
import { CHAIN } from './names.js';
import { joinArgs, ruleTarget } from './rule.js';

/**
 * The one `iptables-restore --noflush` transaction that brings a family to the desired
 * state, or null when it is already there (a converged pass writes nothing).
 *
 * Like kube-proxy, we declare the chain we own (`:IMDS-GUARD - [0:0]`, which flushes it
 * under --noflush) and write its whole content, so it is always exactly what the code
 * says. Jumps are deleted by their exact saved arguments, never by number: a number
 * read before the transaction may point at someone else's rule by the time it runs,
 * while a vanished rule makes the whole transaction fail and the next pass re-observe.
 */
export function renderRestore(desired: DesiredFamily, cmp: NatComparison): string | null {
  if (!cmp.rewriteChain && !cmp.insertJump) return null;
  const lines = ['*nat'];
  if (cmp.rewriteChain) {
    lines.push(`:${CHAIN} - [0:0]`);
    for (const r of desired.rules) lines.push(`-A ${CHAIN} ${joinArgs(r.args)}`);
  }
  for (const j of cmp.jumpsToDelete) lines.push(`-D PREROUTING ${joinArgs(j.args)}`);
  if (cmp.insertJump) lines.push(`-I PREROUTING 1 ${joinArgs(desired.jumpArgs)}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * The transaction that deletes everything imds-guard owns in this table: every rule
 * that jumps to our chain (wherever someone put it, since the chain cannot be deleted
 * while referenced), then the chain. Null when there is nothing of ours.
 */
export function renderRemoval(table: NatTable): string | null {
  const refs = chainsJumpingTo(table, CHAIN).flatMap((c) => (c === CHAIN ? [] : chainRules(table, c).filter((r) => ruleTarget(r) === CHAIN)));
  if (refs.length === 0 && !hasChain(table, CHAIN)) return null;
  const lines = ['*nat'];
  for (const r of refs) lines.push(`-D ${r.chain} ${joinArgs(r.args)}`);
  if (hasChain(table, CHAIN)) lines.push(`:${CHAIN} - [0:0]`, `-X ${CHAIN}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Whether the table holds anything of ours (chain or a jump to it). */
export function holdsOurs(table: NatTable): boolean {
  return renderRemoval(table) !== null;
}
