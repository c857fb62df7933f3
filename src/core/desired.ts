import { createHash } from 'node:crypto';
import type { Config } from './config.js';
import { type Endpoint, hostPrefix } from './endpoint.js';
import type { Family } from './family.js';
import { CHAIN, JUMP_COMMENT, RULE_COMMENT_PREFIX, interfacePatternMatches } from './names.js';
import { type Rule, parseRuleArgs } from './rule.js';
import { type Target, targetArgs } from './target.js';

/** One rule imds-guard wants in its chain: traffic from `iface` to `endpoint` goes to `target`. */
export interface DesiredRule {
  readonly family: Family;
  readonly iface: string;
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

export function desiredFamily(config: Config, family: Family, interfaces: readonly string[]): DesiredFamily {
  const target = family === 'ipv4' ? config.target : config.target6;
  const endpoints = config.endpoints.filter((e) => e.family === family);
  const rules = interfaces.flatMap((iface) => endpoints.map((endpoint) => desiredRule(family, iface, endpoint, target)));
  return { family, rules, jumpArgs: JUMP_ARGS };
}

export function desiredRule(family: Family, iface: string, endpoint: Endpoint, target: Target): DesiredRule {
  const semantic = [
    '-d', `${endpoint.address}/${hostPrefix(family)}`,
    '-i', iface,
    '-p', 'tcp', '-m', 'tcp', '--dport', String(endpoint.port),
  ];
  const action = targetArgs(target, family);
  const id = createHash('sha256').update([family, ...semantic, ...action].join(' ')).digest('hex').slice(0, 12);
  const args = [...semantic, '-m', 'comment', '--comment', `${RULE_COMMENT_PREFIX}${id}`, ...action];
  return { family, iface, endpoint, target, id, args };
}

export function ruleIdOf(comment: string | undefined): string | null {
  return comment?.startsWith(RULE_COMMENT_PREFIX) ? comment.slice(RULE_COMMENT_PREFIX.length) : null;
}

/** The desired rule as a parsed Rule, to compare with what iptables-save returns. */
export function asRule(rule: DesiredRule): Rule {
  return parseRuleArgs(CHAIN, rule.args);
}
