import { type ChainDiff, type JumpDiff, endpointsOf, jumpsOf } from './chain-compare.js';
import type { DesiredRule } from './desired.js';
import { formatEndpoint } from './endpoint.js';
import type { Backend, Family } from './family.js';
import { CHECK, type Finding } from './findings.js';
import { FORWARD_CHAIN, NAT_CHAIN } from './names.js';
import { type Rule, savedLine } from './rule.js';
import { chainRules, type SavedTable } from './saved-table.js';
import { commandLine, iptablesCommand } from './shell-words.js';

export { savedLine };

/** The command that deletes one saved rule, for the family and backend it is in, quoted for a shell. */
export function deleteCommand(family: Family, backend: Backend, table: string, r: Rule): string {
  return commandLine([iptablesCommand(family, backend), '-t', table, '-D', r.chain, ...r.args]);
}

interface Where {
  readonly family: Family;
  readonly backend: Backend;
}

/** What a rule protects, in words, for the verdict line. */
function describeBlock(diff: ChainDiff, r: DesiredRule): string {
  const to = r.endpoint === undefined ? 'the endpoints' : formatEndpoint(r.endpoint);
  if (diff.desired.chain === NAT_CHAIN) return `forwarded connections to ${to}`;
  if (diff.desired.chain === FORWARD_CHAIN) return `the backstop for ${to} (forwarded packets that skipped NAT)`;
  return `connections to ${to} from ${r.cgroup === undefined ? 'host-network containers' : `cgroup ${r.cgroup}`}`;
}

/** The findings one chain comparison means. Compare functions return data; the words are all here. */
export function chainFindings(diff: ChainDiff, where: Where, table: SavedTable): Finding[] {
  const { desired } = diff;
  const at = { family: where.family, backend: where.backend, table: desired.table, chain: desired.chain } as const;
  const out: Finding[] = [];
  const apply = { remediation: 'imds-guard apply' };
  if (!diff.exists) out.push({ ...at, id: CHECK.chain, kind: 'chain-missing', status: 'fail', severity: 'high', message: `${desired.table} chain ${desired.chain} is missing`, evidence: [], ...apply });
  for (const r of diff.altered) {
    out.push({ ...at, id: CHECK.ruleAltered, kind: 'rule-altered', status: 'fail', severity: 'high', message: `a rule in ${desired.chain} was altered`, ...about(r.desired), evidence: [savedLine(r.actual)], ...apply });
  }
  for (const r of diff.stale) {
    out.push({ ...at, id: CHECK.cgroupStale, kind: 'cgroup-stale', status: 'fail', severity: 'critical', message: `the rule for cgroup ${r.desired.cgroup ?? ''} was resolved against a cgroup that has since been removed and made again: it matches nothing`, ...about(r.desired), evidence: [savedLine(r.actual)], ...apply });
  }
  for (const r of diff.unknown) {
    out.push({ ...at, id: CHECK.ruleUnknown, kind: 'rule-unknown', status: 'fail', severity: 'medium', message: `${desired.chain} holds a rule imds-guard did not write`, evidence: [savedLine(r)], remediation: 'imds-guard apply (rewrites the chain)' });
  }
  if (diff.reordered) {
    out.push({ ...at, id: CHECK.ruleOrder, kind: 'rule-reordered', status: 'fail', severity: 'low', message: `the rules in ${desired.chain} were reordered`, evidence: chainRules(table, desired.chain).map(savedLine), ...apply });
  }
  for (const jump of jumpsOf(diff)) out.push(...jumpFindings(diff, jump, where, at, table));
  for (const r of desired.rules.filter((x) => x.purpose === 'block')) {
    const present = diff.matched.get(r.id);
    const ok = present !== undefined && diff.reachesChain;
    const what = describeBlock(diff, r);
    const [kind, message] = ok
      ? (['protected', `${what}: refused`] as const)
      : present === undefined
        ? (['rule-missing', `${what}: NOT refused, the rule is missing or altered`] as const)
        : (['unprotected', `${what}: NOT refused, the ${desired.hook} jump does not take traffic to the rule`] as const);
    const id = desired.chain === FORWARD_CHAIN ? CHECK.backstop : CHECK.protection;
    out.push({ ...at, id, kind, status: ok ? 'pass' : 'fail', severity: ok ? 'info' : 'critical', message, ...about(r), evidence: present === undefined ? [] : [savedLine(present)], ...(ok ? {} : apply) });
  }
  // Said once, for the nat chain: FORWARD holds the same exception.
  for (const r of desired.rules.filter((x) => x.purpose === 'allow' && desired.chain === NAT_CHAIN && diff.matched.has(x.id) && x.interface !== undefined)) {
    out.push({ ...at, id: CHECK.protection, kind: 'protected', status: 'info', severity: 'info', message: `interface ${r.interface ?? ''} is allowed by configuration: its traffic keeps access`, interface: r.interface ?? '', evidence: [savedLine(diff.matched.get(r.id)!)] });
  }
  return out;
}

function about(r: DesiredRule): Partial<Pick<Finding, 'endpoint' | 'interface'>> {
  return { ...(r.endpoint === undefined ? {} : { endpoint: formatEndpoint(r.endpoint) }), ...(r.interface === undefined ? {} : { interface: r.interface }) };
}

function jumpFindings(diff: ChainDiff, jump: JumpDiff, where: Where, at: Pick<Finding, 'family' | 'backend' | 'table' | 'chain'>, table: SavedTable): Finding[] {
  const { desired } = diff;
  const from = jump.from;
  const inHook = from === desired.hook;
  // A broken jump whose traffic still reaches our chain by the other path (the FORWARD
  // jump on top, or DOCKER-USER met first) leaves the backstop working: repaired all the same.
  const severity = diff.reachesChain ? 'medium' : 'critical';
  const out: Finding[] = [];
  if (jump.jumps.length === 0) {
    // What DOCKER-USER holds tells a chain Docker just made (only its RETURN) from one someone emptied of ours.
    const evidence = inHook ? [] : chainRules(table, from).length === 0 ? [`-N ${from}`] : chainRules(table, from).map(savedLine);
    out.push({ ...at, id: CHECK.jump, kind: 'jump-missing', status: 'fail', severity, message: `${from} has no jump to ${desired.chain}`, evidence, remediation: 'imds-guard apply' });
    return out;
  }
  if (jump.intercepting.length > 0) {
    out.push({ ...at, id: CHECK.jump, kind: 'jump-not-first', status: 'fail', severity, message: `rules above the ${desired.chain} jump in ${from} can take metadata traffic before it`, evidence: jump.intercepting.map(savedLine), remediation: `imds-guard apply (moves the jump to the top)` });
    for (const r of jump.intercepting.filter((x) => !isSeedRule(x, diff))) {
      out.push({ ...at, id: CHECK.undermining, kind: 'foreign-undermining', status: 'fail', severity: 'high', message: `a foreign ${from} rule above the ${desired.chain} jump matches metadata traffic`, evidence: [savedLine(r)], remediation: `remove it if it is not wanted: ${deleteCommand(where.family, where.backend, desired.table, r)}` });
    }
  }
  if (jump.altered.length > 0) {
    out.push({ ...at, id: CHECK.jumpDuplicate, kind: 'jump-altered', status: 'fail', severity: 'high', message: `the ${from} jump to ${desired.chain} was altered`, evidence: jump.altered.map(savedLine), remediation: 'imds-guard apply' });
  }
  if (jump.jumps.length > 1) {
    out.push({ ...at, id: CHECK.jumpDuplicate, kind: 'jump-duplicate', status: 'fail', severity: 'low', message: `${from} holds ${jump.jumps.length} jumps to ${desired.chain}`, evidence: jump.jumps.map(savedLine), remediation: 'imds-guard apply' });
  }
  if (inHook && diff.awaitingDocker.length > 0) {
    // Left for Docker to finish: not moved, but not protected either until it does.
    out.push({ ...at, id: CHECK.jump, kind: 'jump-not-first', status: 'fail', severity, message: `Docker is setting up a network: rules for its bridges sit above its -j ${diff.dockerUser?.from ?? ''} in ${from} until it moves that jump back on top as it finishes (the ${desired.chain} jump is moved if it does not)`, evidence: diff.awaitingDocker.map(savedLine), remediation: 'none while Docker finishes; imds-guard apply (moves the jump to the top)' });
    return out;
  }
  if (!jump.insert) {
    const harmless = jump.harmlessAbove > 0 ? ` (${jump.harmlessAbove} harmless rule(s) above it)` : '';
    const dockerUser = diff.dockerUser?.from ?? '';
    const message =
      inHook && diff.viaDockerUser
        ? `the ${desired.chain} jump is in ${from} below Docker's -j ${dockerUser}, which comes first: the jump at the top of ${dockerUser} decides (${jump.harmlessAbove} rule(s) above this one)`
        : inHook
          ? `the ${desired.chain} jump sees all metadata traffic first in ${from}${harmless}`
          : `the ${desired.chain} jump sees all metadata traffic first in ${from}${harmless}${diff.viaDockerUser ? `, which ${desired.hook} jumps to first` : `; ${desired.hook} does not send all of it there first, so the ${desired.hook} jump decides`}`;
    out.push({ ...at, id: CHECK.jump, kind: 'protected', status: 'pass', severity: 'info', message, evidence: [savedLine(jump.jumps[0]!)] });
  }
  return out;
}

/** The seed recipe's hand-made block: a DNAT or REDIRECT of exactly an endpoint, not ours. */
export function isSeedRule(r: Rule, diff: ChainDiff): boolean {
  if (diff.desired.table !== 'nat') return false;
  const target = r.options.find((o) => o.name === '-j')?.values[0];
  if (target !== 'DNAT' && target !== 'REDIRECT') return false;
  const dst = r.options.find((o) => o.name === '-d' && !o.negated)?.values[0];
  const dport = r.options.find((o) => o.name === '--dport' && !o.negated)?.values[0];
  return dst !== undefined && endpointsOf(diff.desired).some((e) => (dst === e.address || dst.split('/')[0] === e.address) && String(e.port) === dport);
}

/** Hand-made metadata blocks anywhere in nat PREROUTING (the seed recipe's): they may send the request off the host. */
export function seedDuplicateFindings(diff: ChainDiff, where: Where, table: SavedTable): Finding[] {
  if (diff.desired.table !== 'nat') return [];
  return chainRules(table, diff.desired.hook)
    .filter((r) => r.options.find((o) => o.name === '-j')?.values[0] !== diff.desired.chain && isSeedRule(r, diff))
    .map((r) => ({
      family: where.family,
      backend: where.backend,
      table: 'nat',
      chain: diff.desired.hook,
      id: CHECK.seedDuplicate,
      kind: 'seed-duplicate' as const,
      status: 'warn' as const,
      severity: 'low' as const,
      message: 'a hand-made metadata block (like the seed recipe) duplicates imds-guard; it may send the request off the host',
      evidence: [savedLine(r)],
      remediation: deleteCommand(where.family, where.backend, 'nat', r),
    }));
}
