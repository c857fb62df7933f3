import { createHash } from 'node:crypto';
import { type Endpoint, hostPrefix } from './endpoint.js';
import type { Family } from './family.js';
import { DOCKER_USER_CHAIN, FORWARD_CHAIN, JUMP_COMMENT, NAT_CHAIN, OUTPUT_CHAIN, type OwnedChainName, RULE_COMMENT_PREFIX } from './names.js';
import { type Rule, parseRuleArgs } from './rule.js';
import { type Target, targetArgs } from './target.js';

/**
 * What the configuration asks for, derived from Config once at the top of a pass. Core
 * functions take this, not the whole Config.
 */
export interface GuardSpec {
  readonly endpoints: readonly Endpoint[];
  readonly targets: Readonly<Record<Family, Target>>;
  /** Interfaces that keep access (literal names, validated): their traffic returns before the catch-all. */
  readonly allow: readonly string[];
}

/** What a rule does: let an allowed interface or exempt cgroup through, or turn the connection away. */
export type RulePurpose = 'allow' | 'block';

/** One rule imds-guard wants in one of its chains. */
export interface DesiredRule {
  readonly purpose: RulePurpose;
  /** The endpoint a block rule turns away. */
  readonly endpoint?: Endpoint;
  /** The interface an allow rule lets through. */
  readonly interface?: string;
  /** The cgroup (v2 path, relative to the cgroup2 mount) the rule matches sockets of. */
  readonly cgroup?: string;
  /** Short content id carried in the comment, so a changed rule is told from a foreign one. */
  readonly id: string;
  /** Arguments after `-A CHAIN`, in the order iptables-save prints them. */
  readonly args: readonly string[];
}

export type TableWithChains = 'nat' | 'filter';

/** A chain imds-guard owns, the built-in chain that jumps to it first, and its whole content. */
export interface DesiredChain {
  readonly table: TableWithChains;
  readonly chain: OwnedChainName;
  readonly hook: 'PREROUTING' | 'FORWARD' | 'OUTPUT';
  /** Arguments of the jump, after `-A HOOK`. */
  readonly jumpArgs: readonly string[];
  /**
   * A chain of Docker's that, when the table has it, also holds the jump (the same
   * arguments) as its first rule: DOCKER-USER for the backstop. Never created by us; the
   * hook's jump stays, for hosts without Docker and before dockerd has started.
   */
  readonly alsoAtTopOf?: typeof DOCKER_USER_CHAIN;
  readonly rules: readonly DesiredRule[];
}

export interface DesiredFamily {
  readonly family: Family;
  /** Empty when the family has no endpoint: then nothing of ours belongs in its tables. */
  readonly chains: readonly DesiredChain[];
}

export const jumpArgs = (chain: OwnedChainName): readonly string[] => ['-m', 'comment', '--comment', JUMP_COMMENT, '-j', chain];

/**
 * The protection of one family, whatever the host's interfaces are called:
 * - nat PREROUTING: every new connection the host receives for forwarding to an
 *   endpoint, on any interface, goes to the target. PREROUTING never sees the host's
 *   own traffic (that goes through OUTPUT), so the host keeps its access, and a bridge,
 *   overlay or VM bridge created later is covered from its first packet, with no rule
 *   per network and no event needed.
 * - filter FORWARD: the backstop. A packet that reaches FORWARD still addressed to an
 *   endpoint skipped our NAT (NOTRACK in raw, a foreign DNAT that won at the same hook):
 *   it is refused with a reset. A redirected or DNAT-ed packet no longer has the
 *   endpoint as its destination there, so the backstop never sees what NAT handled.
 *   Where Docker runs, its jump also sits at the top of DOCKER-USER, which Docker keeps
 *   first in FORWARD: Docker's bridge rules put above the FORWARD jump on every network
 *   create then never come before the backstop, and need no write.
 * Allowed interfaces return first in both chains.
 * `output`, when given, is the filter OUTPUT chain's content (host-network containers).
 */
export function desiredFamily(spec: GuardSpec, family: Family, output: readonly DesiredRule[] | null = null): DesiredFamily {
  const endpoints = spec.endpoints.filter((e) => e.family === family);
  if (endpoints.length === 0) return { family, chains: [] };
  const allow = (chain: OwnedChainName): DesiredRule[] => spec.allow.map((iface) => ruleFor(family, chain, 'allow', ['-i', iface], ['-j', 'RETURN'], { interface: iface }));
  const nat: DesiredChain = {
    table: 'nat',
    chain: NAT_CHAIN,
    hook: 'PREROUTING',
    jumpArgs: jumpArgs(NAT_CHAIN),
    rules: [...allow(NAT_CHAIN), ...endpoints.map((e) => ruleFor(family, NAT_CHAIN, 'block', endpointMatch(family, e), targetArgs(spec.targets[family], family), { endpoint: e }))],
  };
  const forward: DesiredChain = {
    table: 'filter',
    chain: FORWARD_CHAIN,
    hook: 'FORWARD',
    jumpArgs: jumpArgs(FORWARD_CHAIN),
    alsoAtTopOf: DOCKER_USER_CHAIN,
    rules: [...allow(FORWARD_CHAIN), ...endpoints.map((e) => ruleFor(family, FORWARD_CHAIN, 'block', endpointMatch(family, e), REJECT_RESET, { endpoint: e }))],
  };
  const chains = [nat, forward];
  if (output !== null && output.length > 0) chains.push({ table: 'filter', chain: OUTPUT_CHAIN, hook: 'OUTPUT', jumpArgs: jumpArgs(OUTPUT_CHAIN), rules: output });
  return { family, chains };
}

/** A reset, so the client sees "connection refused" at once (ip6tables spells it the same). */
export const REJECT_RESET: readonly string[] = ['-j', 'REJECT', '--reject-with', 'tcp-reset'];

/** The match part of a rule for one endpoint, in the order iptables-save prints it. */
export function endpointMatch(family: Family, e: Endpoint): string[] {
  return ['-d', `${e.address}/${hostPrefix(family)}`, '-p', 'tcp', '-m', 'tcp', '--dport', String(e.port)];
}

/**
 * A rule with its content id: the id hashes what the rule means (family, chain, match,
 * action), and the comment carrying it sits between match and action, where
 * iptables-save prints it. `extraComment` (e.g. a cgroup's inode) is carried in the
 * comment but is not part of the id.
 */
export function ruleFor(
  family: Family,
  chain: OwnedChainName,
  purpose: RulePurpose,
  match: readonly string[],
  action: readonly string[],
  about: { endpoint?: Endpoint; interface?: string; cgroup?: string },
  extraComment = '',
): DesiredRule {
  const id = createHash('sha256').update([family, chain, ...match, ...action].join(' ')).digest('hex').slice(0, 12);
  const comment = `${RULE_COMMENT_PREFIX}${id}${extraComment === '' ? '' : ` ${extraComment}`}`;
  return { purpose, ...about, id, args: [...match, '-m', 'comment', '--comment', comment, ...action] };
}

/** Our id in a rule's comment (the first word after the prefix), or null. */
export function ruleIdOf(comment: string | undefined): string | null {
  if (comment === undefined || !comment.startsWith(RULE_COMMENT_PREFIX)) return null;
  const id = comment.slice(RULE_COMMENT_PREFIX.length).split(' ')[0] ?? '';
  return /^[0-9a-f]{12}$/.test(id) ? id : null;
}

/** The desired rule as a parsed Rule of `chain`, to compare with what iptables-save returns. */
export function asRule(chain: string, rule: DesiredRule): Rule {
  return parseRuleArgs(chain, rule.args);
}
