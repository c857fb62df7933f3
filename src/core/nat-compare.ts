import { type DesiredFamily, type DesiredRule, type RuleVia, asRule, ruleIdOf } from './desired.js';
import { type Endpoint, formatEndpoint, hostPrefix } from './endpoint.js';
import type { Backend, Family } from './family.js';
import { CHECK, type Finding } from './findings.js';
import { memberLine } from './ipset.js';
import { type NatTable, chainRules, hasChain } from './nat-table.js';
import { CHAIN } from './names.js';
import { canIntercept } from './reach.js';
import { type Rule, joinArgs, optionValue, parseRuleArgs, ruleComment, ruleTarget } from './rule.js';
import { sameRule } from './rule-compare.js';

/** Desired vs actual for one family's nat table: what is wrong, and what must change to fix it. */
export interface NatComparison {
  readonly findings: readonly Finding[];
  /** Our chain must be (re)written whole. */
  readonly rewriteChain: boolean;
  /** Our jumps to delete (by their exact saved arguments) before the canonical one is inserted at the top. */
  readonly jumpsToDelete: readonly Rule[];
  readonly insertJump: boolean;
}

export interface CompareInput {
  readonly desired: DesiredFamily;
  readonly table: NatTable;
  readonly family: Family;
  readonly backend: Backend;
  /** Interfaces covered (names and wildcards): the scope in which a foreign rule can undermine us. */
  readonly interfaces: readonly string[];
  /** Interfaces whose member of our set is in place (see compareSet); empty when no set is used. */
  readonly setMembersPresent?: ReadonlySet<string>;
}

/** One interface-endpoint pair the protection verdict is given for, and the rule that covers it. */
interface Covered {
  readonly iface: string;
  readonly rule: DesiredRule;
  /** For a set member: whether the member is in place. */
  readonly member: boolean | null;
}

const savedLine = (r: Rule): string => `-A ${r.chain} ${joinArgs(r.args)}`;

export function compareNat(input: CompareInput): NatComparison {
  const { desired, table, family, backend, interfaces } = input;
  const setMembersPresent = input.setMembersPresent ?? new Set<string>();
  const at = { family, backend } as const;
  const findings: Finding[] = [];
  const chain = compareChain(desired, table);
  const jump = compareJump(desired, table, interfaces);

  if (!chain.exists) {
    findings.push({ ...at, id: CHECK.chain, kind: 'chain-missing', status: 'fail', severity: 'high', message: `nat chain ${CHAIN} is missing`, evidence: [], remediation: 'imds-guard apply' });
  }
  for (const r of chain.altered) {
    findings.push({ ...at, id: CHECK.ruleAltered, kind: 'rule-altered', status: 'fail', severity: 'high', message: `a rule in ${CHAIN} was altered`, ...interfaceOf(r.desired.via), endpoint: formatEndpoint(r.desired.endpoint), evidence: [savedLine(r.actual)], remediation: 'imds-guard apply' });
  }
  for (const r of chain.unknown) {
    // A rule with our id comment names its interface (or our set): once Docker removes
    // that network (or the last custom-named one), the agent tells its rule going away
    // apart from someone else's rule.
    const ours = ruleIdOf(ruleComment(r)) !== null;
    const iface = ours ? optionValue(r, '-i', '--in-interface') : undefined;
    const set = ours ? optionValue(r, '--match-set') : undefined;
    findings.push({ ...at, id: CHECK.ruleUnknown, kind: 'rule-unknown', status: 'fail', severity: 'medium', message: `${CHAIN} holds a rule imds-guard did not write`, ...(iface === undefined ? {} : { interface: iface }), ...(set === undefined ? {} : { set }), evidence: [savedLine(r)], remediation: 'imds-guard apply (rewrites the chain)' });
  }
  if (chain.reordered) {
    findings.push({ ...at, id: CHECK.ruleOrder, kind: 'rule-reordered', status: 'fail', severity: 'low', message: `the rules in ${CHAIN} were reordered`, evidence: chainRules(table, CHAIN).map(savedLine), remediation: 'imds-guard apply' });
  }
  findings.push(...jump.findings.map((f) => ({ ...at, ...f })));

  const jumpOk = jump.reachesChain;
  for (const c of coveredPairs(desired, setMembersPresent)) {
    const present = chain.matched.has(c.rule.id);
    const ok = present && jumpOk && c.member !== false;
    const label = `${c.iface} -> ${formatEndpoint(c.rule.endpoint)}`;
    const evidence = [...(present ? [savedLine(chain.matched.get(c.rule.id)!)] : []), ...(c.member === true ? [memberLine(family, c.iface)] : [])];
    const [kind, message] = ok
      ? (['protected', `${label} is protected`] as const)
      : c.member === false
        ? (['set-member-missing', `${label} is not protected: ${c.iface} is missing from ipset ${desired.set?.name ?? ''}`] as const)
        : !present
          ? (['rule-missing', `${label} is not protected: its rule is missing`] as const)
          : (['unprotected', `${label} has its rule, but the PREROUTING jump does not take traffic to it`] as const);
    findings.push({ ...at, id: CHECK.protection, kind, status: ok ? 'pass' : 'fail', severity: ok ? 'info' : 'critical', message, interface: c.iface, endpoint: formatEndpoint(c.rule.endpoint), evidence, ...(ok ? {} : { remediation: 'imds-guard apply' }) });
  }
  findings.push(...seedDuplicates(table, desired).map((f) => ({ ...at, ...f })));

  const rewriteChain = !chain.exists || chain.altered.length > 0 || chain.unknown.length > 0 || chain.reordered || chain.matched.size !== desired.rules.length;
  return { findings, rewriteChain, jumpsToDelete: jump.jumpsToDelete, insertJump: jump.jumpsToDelete.length > 0 || jump.jumps.length === 0 };
}

function coveredPairs(desired: DesiredFamily, membersPresent: ReadonlySet<string>): Covered[] {
  return desired.rules.flatMap((rule): Covered[] =>
    'interface' in rule.via
      ? [{ iface: rule.via.interface, rule, member: null }]
      : (desired.set?.interfaces ?? []).map((iface) => ({ iface, rule, member: membersPresent.has(iface) })),
  );
}

function interfaceOf(via: RuleVia): { interface?: string } {
  return 'interface' in via ? { interface: via.interface } : {};
}

interface ChainState {
  exists: boolean;
  matched: Map<string, Rule>;
  altered: { desired: DesiredRule; actual: Rule }[];
  unknown: Rule[];
  reordered: boolean;
}

function compareChain(desired: DesiredFamily, table: NatTable): ChainState {
  const byId = new Map(desired.rules.map((d) => [d.id, d]));
  const matched = new Map<string, Rule>();
  const altered: ChainState['altered'] = [];
  const unknown: Rule[] = [];
  const order: string[] = [];
  for (const actual of chainRules(table, CHAIN)) {
    const id = ruleIdOf(ruleComment(actual));
    const d = id === null ? undefined : byId.get(id);
    if (d === undefined || matched.has(d.id)) unknown.push(actual);
    else if (sameRule(actual, asRule(d))) {
      matched.set(d.id, actual);
      order.push(d.id);
    } else altered.push({ desired: d, actual });
  }
  const expectedOrder = desired.rules.map((d) => d.id).filter((id) => matched.has(id));
  const reordered = unknown.length === 0 && altered.length === 0 && order.some((id, i) => id !== expectedOrder[i]);
  return { exists: hasChain(table, CHAIN), matched, altered, unknown, reordered };
}

interface JumpState {
  jumps: Rule[];
  jumpsToDelete: Rule[];
  /** All endpoint traffic reaches our chain: a canonical jump comes first and nothing above it can take the traffic. A duplicate below it needs tidying but does not take protection away. */
  reachesChain: boolean;
  findings: Omit<Finding, 'family' | 'backend'>[];
}

/**
 * The jump is judged by meaning, not by number: a rule above it matters only if it
 * can take endpoint traffic away (Swarm puts its DOCKER-INGRESS jump at the top on
 * every ingress setup; that must not start a fight).
 */
function compareJump(desired: DesiredFamily, table: NatTable, interfaces: readonly string[]): JumpState {
  const prerouting = chainRules(table, 'PREROUTING');
  const jumps = prerouting.filter((r) => ruleTarget(r) === CHAIN);
  const findings: JumpState['findings'] = [];
  if (jumps.length === 0) {
    findings.push({ id: CHECK.jump, kind: 'jump-missing', status: 'fail', severity: 'critical', message: `PREROUTING has no jump to ${CHAIN}`, evidence: [], remediation: 'imds-guard apply' });
    return { jumps, jumpsToDelete: [], reachesChain: false, findings };
  }
  const canonical = parseRuleArgs('PREROUTING', desired.jumpArgs);
  const first = prerouting.indexOf(jumps[0]!);
  const endpoints = uniqueEndpoints(desired);
  const above = prerouting.slice(0, first).filter((r) => endpoints.some((e) => canIntercept(r, e, interfaces)));
  const altered = jumps.filter((j) => !sameRule(j, canonical));
  let broken = false;
  if (above.length > 0) {
    broken = true;
    findings.push({ id: CHECK.jump, kind: 'jump-not-first', status: 'fail', severity: 'critical', message: `rules above the ${CHAIN} jump in PREROUTING can take metadata traffic before it`, evidence: above.map(savedLine), remediation: 'imds-guard apply (moves the jump to the top)' });
    for (const r of above.filter((r) => !isSeedRule(r, endpoints))) {
      findings.push({ id: CHECK.undermining, kind: 'foreign-undermining', status: 'fail', severity: 'high', message: `a foreign PREROUTING rule above the ${CHAIN} jump matches metadata traffic`, evidence: [savedLine(r)], remediation: `remove it if it is not wanted: iptables -t nat -D PREROUTING ${joinArgs(r.args)}` });
    }
  }
  if (altered.length > 0) {
    broken = true;
    findings.push({ id: CHECK.jumpDuplicate, kind: 'jump-altered', status: 'fail', severity: 'high', message: `the PREROUTING jump to ${CHAIN} was altered`, evidence: altered.map(savedLine), remediation: 'imds-guard apply' });
  }
  if (jumps.length > 1) {
    broken = true;
    findings.push({ id: CHECK.jumpDuplicate, kind: 'jump-duplicate', status: 'fail', severity: 'low', message: `PREROUTING holds ${jumps.length} jumps to ${CHAIN}`, evidence: jumps.map(savedLine), remediation: 'imds-guard apply' });
  }
  if (!broken) {
    findings.push({ id: CHECK.jump, kind: 'protected', status: 'pass', severity: 'info', message: `the ${CHAIN} jump sees all metadata traffic first${first > 0 ? ` (${first} harmless rule(s) above it)` : ''}`, evidence: [savedLine(jumps[0]!)] });
  }
  return { jumps, jumpsToDelete: broken ? jumps : [], reachesChain: above.length === 0 && sameRule(jumps[0]!, canonical), findings };
}

function uniqueEndpoints(desired: DesiredFamily): Endpoint[] {
  const seen = new Map<string, Endpoint>();
  for (const r of desired.rules) seen.set(formatEndpoint(r.endpoint), r.endpoint);
  return [...seen.values()];
}

/** The seed recipe's hand-made block: a DNAT or REDIRECT of exactly an endpoint, not ours. */
function isSeedRule(r: Rule, endpoints: readonly Endpoint[]): boolean {
  const target = ruleTarget(r);
  if (target !== 'DNAT' && target !== 'REDIRECT') return false;
  const dst = r.options.find((o) => o.name === '-d' && !o.negated)?.values[0];
  const dport = r.options.find((o) => o.name === '--dport' && !o.negated)?.values[0];
  return dst !== undefined && endpoints.some((e) => (dst === e.address || dst === `${e.address}/${hostPrefix(e.family)}`) && String(e.port) === dport);
}

function seedDuplicates(table: NatTable, desired: DesiredFamily): Omit<Finding, 'family' | 'backend'>[] {
  const endpoints = uniqueEndpoints(desired);
  return chainRules(table, 'PREROUTING')
    .filter((r) => ruleTarget(r) !== CHAIN && isSeedRule(r, endpoints))
    .map((r) => ({
      id: CHECK.seedDuplicate,
      kind: 'seed-duplicate' as const,
      status: 'warn' as const,
      severity: 'low' as const,
      message: 'a hand-made metadata block (like the seed recipe) duplicates imds-guard; it may send the request off the host',
      evidence: [savedLine(r)],
      remediation: `iptables -t nat -D PREROUTING ${joinArgs(r.args)}`,
    }));
}
