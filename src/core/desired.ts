import { createHash } from 'node:crypto';
import type { Config } from './config.js';
import { type Endpoint, hostPrefix } from './endpoint.js';
import type { Family } from './family.js';
import { type DesiredSet, SET_NAME, canBeMember, desiredSet } from './ipset.js';
import { CHAIN, JUMP_COMMENT, RULE_COMMENT_PREFIX, interfacePatternMatches } from './names.js';
import { type Rule, parseRuleArgs } from './rule.js';
import { type Target, targetArgs } from './target.js';

/** What a rule matches traffic by: an interface name or wildcard, or membership of our set. */
export type RuleVia = { readonly interface: string } | { readonly set: string };

/** One rule imds-guard wants in its chain: traffic arriving `via` an interface to `endpoint` goes to `target`. */
export interface DesiredRule {
  readonly family: Family;
  readonly via: RuleVia;
  readonly endpoint: Endpoint;
  readonly target: Target;
  /** Short content id carried in the comment, so a changed rule is told from a foreign one. */
  readonly id: string;
  /** Arguments after `-A IMDS-GUARD`, in the order iptables-save prints them. */
  readonly args: readonly string[];
}

export interface DesiredFamily {
  readonly family: Family;
  readonly rules: readonly DesiredRule[];
  /** Arguments of the PREROUTING jump, after `-A PREROUTING`. */
  readonly jumpArgs: readonly string[];
  /** The set whose members the set rules match, or null when every interface has its own rules. */
  readonly set: DesiredSet | null;
}

/** How the covered interfaces are matched: each by rules of its own, or as a member of our set. */
export interface Coverage {
  readonly rules: readonly string[];
  /** Null when no set is used (ipset unavailable or switched off). */
  readonly members: readonly string[] | null;
}

export const JUMP_ARGS: readonly string[] = ['-m', 'comment', '--comment', JUMP_COMMENT, '-j', CHAIN];

/**
 * Interfaces to cover: the configured names and wildcards, plus bridge names Docker
 * reports that no wildcard already covers (custom `com.docker.network.bridge.name`).
 */
export function coveredInterfaces(configured: readonly string[], discovered: readonly string[]): string[] {
  const extra = discovered.filter((name) => !configured.some((p) => interfacePatternMatches(p, name)));
  return [...configured, ...[...new Set(extra)].sort()];
}

/**
 * The configured names and wildcards keep rules of their own (they change only with
 * the config); the bridges Docker adds under custom names become set members when the
 * host has ipset, so creating a network does not rewrite the nat table. A host with no
 * such bridge has no set at all.
 */
export function coverage(configured: readonly string[], interfaces: readonly string[], useSet: boolean): Coverage {
  const discovered = interfaces.filter((i) => !configured.includes(i));
  const members = discovered.filter(canBeMember);
  if (!useSet || members.length === 0) return { rules: interfaces, members: null };
  return { rules: [...configured, ...discovered.filter((i) => !canBeMember(i))], members };
}

/** Rules for each of `interfaces`, plus set rules and the set when `members` is not null. */
export function desiredFamily(config: Config, family: Family, interfaces: readonly string[], members: readonly string[] | null = null): DesiredFamily {
  const target = family === 'ipv4' ? config.target : config.target6;
  const endpoints = config.endpoints.filter((e) => e.family === family);
  const rules = interfaces.flatMap((iface) => endpoints.map((endpoint) => desiredRule(family, { interface: iface }, endpoint, target)));
  if (members === null || endpoints.length === 0) return { family, rules, jumpArgs: JUMP_ARGS, set: null };
  const setRules = endpoints.map((endpoint) => desiredRule(family, { set: SET_NAME[family] }, endpoint, target));
  return { family, rules: [...rules, ...setRules], jumpArgs: JUMP_ARGS, set: desiredSet(family, members) };
}

export function desiredRule(family: Family, via: RuleVia, endpoint: Endpoint, target: Target): DesiredRule {
  // In the order iptables-save prints them, so a rendered rule reads like a saved one.
  const semantic = [
    '-d', `${endpoint.address}/${hostPrefix(family)}`,
    ...('interface' in via ? ['-i', via.interface] : []),
    '-p', 'tcp', '-m', 'tcp', '--dport', String(endpoint.port),
    ...('set' in via ? ['-m', 'set', '--match-set', via.set, 'src,src'] : []),
  ];
  const action = targetArgs(target, family);
  const id = createHash('sha256').update([family, ...semantic, ...action].join(' ')).digest('hex').slice(0, 12);
  const args = [...semantic, '-m', 'comment', '--comment', `${RULE_COMMENT_PREFIX}${id}`, ...action];
  return { family, via, endpoint, target, id, args };
}

export function ruleIdOf(comment: string | undefined): string | null {
  return comment?.startsWith(RULE_COMMENT_PREFIX) ? comment.slice(RULE_COMMENT_PREFIX.length) : null;
}

/** The desired rule as a parsed Rule, to compare with what iptables-save returns. */
export function asRule(rule: DesiredRule): Rule {
  return parseRuleArgs(CHAIN, rule.args);
}
