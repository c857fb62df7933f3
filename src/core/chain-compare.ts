import { type DesiredChain, type DesiredRule, asRule, ruleIdOf } from './desired.js';
import type { Endpoint } from './endpoint.js';
import { formatEndpoint } from './endpoint.js';
import { isOwnedChain } from './names.js';
import { type ReachScope, canIntercept } from './reach.js';
import { isBridgeForwardRule } from './docker-churn.js';
import { type Rule, parseRuleArgs, ruleComment, ruleTarget, savedLine } from './rule.js';
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
  /** The jump in the hook. */
  readonly jump: JumpDiff;
  /** The jump at the top of DOCKER-USER; null when the chain wants none there or the table has no DOCKER-USER. */
  readonly dockerUser: JumpDiff | null;
  /**
   * Docker's unconditional `-j DOCKER-USER` is in the hook with nothing above it that can
   * take endpoint traffic: that traffic meets DOCKER-USER before any rule below, so our
   * jump at the top of DOCKER-USER decides, and where the hook's own jump sits does not.
   */
  readonly viaDockerUser: boolean;
  /**
   * Docker half way through a network create: the rules it just put at the top of the
   * hook for the new bridge, still above its `-j DOCKER-USER`, which it moves back on top
   * when it finishes (deleting it, then inserting it: for a moment the hook has none). Left for Docker while the caller says they are fresh (the agent,
   * for a few seconds); empty otherwise, and then the hook's jump is moved above them.
   */
  readonly awaitingDocker: readonly Rule[];
  /** All endpoint traffic reaches our chain before anything that could take it: by the hook's jump, or through DOCKER-USER. */
  readonly reachesChain: boolean;
  /** The chain must be declared (flushing it) and written whole. */
  readonly rewriteChain: boolean;
}

export interface JumpDiff {
  /** The chain the jumps are in: the hook, or DOCKER-USER. */
  readonly from: string;
  /** Every rule in `from` that jumps to our chain, in order. */
  readonly jumps: readonly Rule[];
  /** Rules above the first jump that can take endpoint traffic before it (judged by meaning). */
  readonly intercepting: readonly Rule[];
  /** Rules above the first jump that cannot (Swarm's DOCKER-INGRESS, Docker's DOCKER-USER). */
  readonly harmlessAbove: number;
  /** Jumps whose text is not the canonical one. */
  readonly altered: readonly Rule[];
  /** All endpoint traffic that enters `from` reaches our chain: the first jump is canonical and nothing above it can take the traffic. */
  readonly reachesChain: boolean;
  /** Our jumps to delete (by their exact saved text) before the canonical one is inserted at the top. */
  readonly toDelete: readonly Rule[];
  readonly insert: boolean;
}

/**
 * Compares one owned chain with a saved table. `allowed` are the interfaces that keep
 * access: a rule above the jump that matches only them takes nothing we protect.
 */
export function compareChain(desired: DesiredChain, table: SavedTable, allowed: readonly string[], waitForDocker: (line: string) => boolean = () => false): ChainDiff {
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
  const scope = reachScope(desired, table, allowed);
  const hookJump = compareJump(desired, desired.hook, table, scope);
  const dockerUser = desired.alsoAtTopOf !== undefined && hasChain(table, desired.alsoAtTopOf) ? compareJump(desired, desired.alsoAtTopOf, table, scope) : null;
  const aboveDockerUser = dockerUser === null ? null : interceptingAboveDockerUser(desired, dockerUser.from, table, scope);
  const viaDockerUser = aboveDockerUser !== null && aboveDockerUser.length === 0;
  // Only while our DOCKER-USER jump is in place: Docker's move then protects, and ours would be undone by it.
  // Docker moves its jump by deleting it, then inserting it on top: in between the hook has none,
  // and what could wait is everything above our hook jump.
  const waitable = dockerUser === null || !dockerUser.reachesChain || hookJump.reachesChain ? [] : (aboveDockerUser ?? hookJump.intercepting);
  const awaitingDocker = waitable.length > 0 && waitable.every((r) => isBridgeForwardRule(savedLine(r)) && waitForDocker(savedLine(r))) ? waitable : [];
  const jump = viaDockerUser || awaitingDocker.length > 0 ? placeNotDeciding(hookJump) : hookJump;
  const reachesChain = hookJump.reachesChain || (viaDockerUser && dockerUser !== null && dockerUser.reachesChain);
  const rewriteChain = !exists || missing.length > 0 || altered.length > 0 || stale.length > 0 || unknown.length > 0 || reordered;
  return { desired, exists, matched, missing, altered, stale, unknown, reordered, jump, dockerUser, viaDockerUser, awaitingDocker, reachesChain, rewriteChain };
}

/**
 * Where a rule above one of our jumps can send endpoint traffic: into the table's foreign
 * user chains (followed), never into the chain being judged (a jump to it is the
 * protection itself, as at the top of DOCKER-USER), and into another chain of ours only
 * as into the unknown.
 */
function reachScope(desired: DesiredChain, table: SavedTable, allowed: readonly string[]): ReachScope {
  return { allowed, chain: (name: string) => (name === desired.chain ? [] : hasChain(table, name) && !isOwnedChain(name) ? chainRules(table, name) : undefined) };
}

/**
 * The jump is judged by meaning, not by number: a rule above it matters only if it can
 * take endpoint traffic away (Swarm puts its DOCKER-INGRESS jump at the top of nat
 * PREROUTING on every ingress setup, Docker its DOCKER-USER jump at the top of FORWARD
 * on every network it creates; neither may start a fight). In DOCKER-USER a RETURN above
 * ours takes the traffic too: it goes back to FORWARD, to Docker's ACCEPTs.
 */
function compareJump(desired: DesiredChain, from: string, table: SavedTable, scope: ReachScope): JumpDiff {
  const rules = chainRules(table, from);
  const jumps = rules.filter((r) => ruleTarget(r) === desired.chain);
  if (jumps.length === 0) return { from, jumps, intercepting: [], harmlessAbove: 0, altered: [], reachesChain: false, toDelete: [], insert: true };
  const canonical = parseRuleArgs(from, desired.jumpArgs);
  const above = rules.slice(0, rules.indexOf(jumps[0]!));
  const endpoints = endpointsOf(desired);
  const intercepting = above.filter((r) => endpoints.some((e) => canIntercept(r, e, scope)));
  const altered = jumps.filter((j) => !sameRule(j, canonical));
  const broken = intercepting.length > 0 || altered.length > 0 || jumps.length > 1;
  return {
    from,
    jumps,
    intercepting,
    harmlessAbove: above.length - intercepting.length,
    altered,
    reachesChain: intercepting.length === 0 && sameRule(jumps[0]!, canonical),
    toDelete: broken ? jumps : [],
    insert: broken,
  };
}

/**
 * What can take the hook's endpoint traffic before it meets DOCKER-USER: the rules above
 * an unconditional `-j DOCKER-USER` (Docker's, exactly as it writes it: every packet
 * enters, and comes back only by a RETURN or the chain's end) that can; null when the
 * hook has no such jump. Our own jump above it takes nothing from us.
 */
function interceptingAboveDockerUser(desired: DesiredChain, dockerUser: string, table: SavedTable, scope: ReachScope): Rule[] | null {
  const hook = chainRules(table, desired.hook);
  const at = hook.findIndex((r) => r.args.length === 2 && r.args[0] === '-j' && r.args[1] === dockerUser);
  if (at < 0) return null;
  const endpoints = endpointsOf(desired);
  return hook.slice(0, at).filter((r) => endpoints.some((e) => canIntercept(r, e, scope)));
}

/**
 * The hook's jump when DOCKER-USER is met first: it must still be there, once and
 * unaltered (for a host whose DOCKER-USER jump goes away), but the rules above it take
 * nothing that DOCKER-USER did not send to our chain first, so it is not moved.
 */
function placeNotDeciding(j: JumpDiff): JumpDiff {
  if (j.jumps.length === 0) return j;
  const broken = j.altered.length > 0 || j.jumps.length > 1;
  return { ...j, intercepting: [], harmlessAbove: j.harmlessAbove + j.intercepting.length, toDelete: broken ? j.jumps : [], insert: broken };
}

/** The endpoints a chain's block rules turn away. */
export function endpointsOf(desired: DesiredChain): Endpoint[] {
  const seen = new Map<string, Endpoint>();
  for (const r of desired.rules) if (r.endpoint !== undefined) seen.set(formatEndpoint(r.endpoint), r.endpoint);
  return [...seen.values()];
}

/** Our jumps to this chain as the diff wants them: the hook's, then DOCKER-USER's when the table has it. */
export function jumpsOf(d: ChainDiff): JumpDiff[] {
  return d.dockerUser === null ? [d.jump] : [d.jump, d.dockerUser];
}

/** Nothing to write for this chain. */
export function chainConverged(d: ChainDiff): boolean {
  return !d.rewriteChain && jumpsOf(d).every((j) => !j.insert);
}
