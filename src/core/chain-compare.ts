import { type DesiredChain, type DesiredRule, asRule, ruleIdOf } from './desired.js';
import type { Endpoint } from './endpoint.js';
import { formatEndpoint } from './endpoint.js';
import { isOwnedChain } from './names.js';
import { canIntercept } from './reach.js';
import { type Rule, parseRuleArgs, ruleComment, ruleTarget } from './rule.js';
import { sameRule, sameRuleExceptComment } from './rule-compare.js';
import { type SavedTable, chainRules, hasChain } from './saved-table.js';

/** Desired vs actual for one owned chain and its jump, as data: what differs, and what a repair must do. */
export interface ChainDiff {
  readonly desired: DesiredChain;
  readonly exists: boolean;
  /** Desired rule id -> the saved rule that matches it exactly. */
  readonly matched: ReadonlyMap<string, Rule>;
  readonly missing: readonly DesiredRule[];
  /** A rule carrying one of our ids whose content was changed. */
  readonly altered: readonly { readonly desired: DesiredRule; readonly actual: Rule }[];
  /** A cgroup rule resolved against a cgroup that has since been removed and made again: it matches nothing. */
  readonly stale: readonly { readonly desired: DesiredRule; readonly actual: Rule }[];
  /** Rules in our chain that are not ours (or a second copy of one of ours). */
  readonly unknown: readonly Rule[];
  readonly reordered: boolean;
  readonly jump: JumpDiff;
  /** The chain must be declared (flushing it) and written whole. */
  readonly rewriteChain: boolean;
}

export interface JumpDiff {
  /** Every rule in the hook that jumps to our chain, in order. */
  readonly jumps: readonly Rule[];
  /** Rules above the first jump that can take endpoint traffic before it (judged by meaning). */
  readonly intercepting: readonly Rule[];
  /** Rules above the first jump that cannot (Swarm's DOCKER-INGRESS, Docker's DOCKER-USER). */
  readonly harmlessAbove: number;
  /** Jumps whose text is not the canonical one. */
  readonly altered: readonly Rule[];
  /** All endpoint traffic reaches our chain: the first jump is canonical and nothing above it can take the traffic. */
  readonly reachesChain: boolean;
  /** Our jumps to delete (by their exact saved text) before the canonical one is inserted at the top. */
  readonly toDelete: readonly Rule[];
  readonly insert: boolean;
}

/**
 * Compares one owned chain with a saved table. `allowed` are the interfaces that keep
 * access: a rule above the jump that matches only them takes nothing we protect.
 */
export function compareChain(desired: DesiredChain, table: SavedTable, allowed: readonly string[]): ChainDiff {
  const byId = new Map(desired.rules.map((d) => [d.id, d]));
  const matched = new Map<string, Rule>();
  const altered: { desired: DesiredRule; actual: Rule }[] = [];
  const stale: { desired: DesiredRule; actual: Rule }[] = [];
  const unknown: Rule[] = [];
  const order: string[] = [];
  const seen = new Set<string>();
  for (const actual of chainRules(table, desired.chain)) {
    const id = ruleIdOf(ruleComment(actual));
    const d = id === null ? undefined : byId.get(id);
    if (d === undefined || seen.has(d.id)) {
      unknown.push(actual);
      continue;
    }
    seen.add(d.id);
    if (sameRule(actual, asRule(desired.chain, d))) {
      matched.set(d.id, actual);
      order.push(d.id);
    } else if (d.cgroup !== undefined && sameRuleExceptComment(actual, asRule(desired.chain, d))) stale.push({ desired: d, actual });
    else altered.push({ desired: d, actual });
  }
  const missing = desired.rules.filter((d) => !seen.has(d.id));
  const expectedOrder = desired.rules.map((d) => d.id).filter((id) => matched.has(id));
  const reordered = unknown.length === 0 && altered.length === 0 && order.some((id, i) => id !== expectedOrder[i]);
  const exists = hasChain(table, desired.chain);
  const jump = compareJump(desired, table, allowed);
  const rewriteChain = !exists || missing.length > 0 || altered.length > 0 || stale.length > 0 || unknown.length > 0 || reordered;
  return { desired, exists, matched, missing, altered, stale, unknown, reordered, jump, rewriteChain };
}

/**
 * The jump is judged by meaning, not by number: a rule above it matters only if it can
 * take endpoint traffic away (Swarm puts its DOCKER-INGRESS jump at the top of nat
 * PREROUTING on every ingress setup, Docker its DOCKER-USER jump at the top of FORWARD
 * on every network it creates; neither may start a fight).
 */
function compareJump(desired: DesiredChain, table: SavedTable, allowed: readonly string[]): JumpDiff {
  const hook = chainRules(table, desired.hook);
  const jumps = hook.filter((r) => ruleTarget(r) === desired.chain);
  if (jumps.length === 0) return { jumps, intercepting: [], harmlessAbove: 0, altered: [], reachesChain: false, toDelete: [], insert: true };
  const canonical = parseRuleArgs(desired.hook, desired.jumpArgs);
  const first = hook.indexOf(jumps[0]!);
  const endpoints = endpointsOf(desired);
  const scope = { allowed, chain: (name: string) => (hasChain(table, name) && !isOwnedChain(name) ? chainRules(table, name) : undefined) };
  const above = hook.slice(0, first);
  const intercepting = above.filter((r) => endpoints.some((e) => canIntercept(r, e, scope)));
  const altered = jumps.filter((j) => !sameRule(j, canonical));
  const broken = intercepting.length > 0 || altered.length > 0 || jumps.length > 1;
  return {
    jumps,
    intercepting,
    harmlessAbove: above.length - intercepting.length,
    altered,
    reachesChain: intercepting.length === 0 && sameRule(jumps[0]!, canonical),
    toDelete: broken ? jumps : [],
    insert: broken,
  };
}

/** The endpoints a chain's block rules turn away. */
export function endpointsOf(desired: DesiredChain): Endpoint[] {
  const seen = new Map<string, Endpoint>();
  for (const r of desired.rules) if (r.endpoint !== undefined) seen.set(formatEndpoint(r.endpoint), r.endpoint);
  return [...seen.values()];
}

/** Nothing to write for this chain. */
export function chainConverged(d: ChainDiff): boolean {
  return !d.rewriteChain && !d.jump.insert;
}
