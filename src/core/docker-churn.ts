import type { Finding } from './findings.js';
import { DOCKER_USER_CHAIN, FORWARD_CHAIN } from './names.js';

/**
 * Docker's own churn at the backstop, told from drift.
 *
 * When dockerd creates a bridge network, and when it starts, it inserts that bridge's
 * rules at the top of filter FORWARD (`-o BR -m conntrack --ctstate RELATED,ESTABLISHED
 * -j ACCEPT`, `-o BR -j DOCKER`, `-i BR ! -o BR -j ACCEPT`, `-i BR -o BR -j ACCEPT`;
 * Docker 20.10 `iptables -I FORWARD`), then puts its DOCKER-USER and isolation jumps back
 * on top. With our jump at the top of DOCKER-USER that costs nothing (core/chain-compare:
 * DOCKER-USER is met first). What is left of Docker's doing:
 * - a network create half done: the bridge's rules above Docker's own `-j DOCKER-USER`
 *   for a moment, or a host whose FORWARD does not start with it: our FORWARD jump sits
 *   below the bridge's ACCEPT until the pass moves it back (the nat catch-all refuses
 *   that bridge's containers all the while);
 * - DOCKER-USER as dockerd just made it (on a host where the agent started first): it
 *   holds only Docker's RETURN, or nothing yet, and our jump is put at its top.
 * That is Docker doing its job, not someone undoing ours: the pass still repairs it, but
 * it is not counted or alerted on as drift.
 *
 * The rules are told by their shape, not by Docker's list of bridges: Docker writes them
 * before the new network shows in its API (a drift check in between saw a bridge Docker
 * did not list yet), and another runtime's bridge rules of the same shape are the same
 * churn. Only the backstop's findings whose evidence is nothing but such rules are split
 * off; any other rule above a jump (a foreign ACCEPT for the endpoint, anything matching
 * addresses or ports), or a jump deleted, keeps the whole family's backstop findings drift.
 * Either way the jumps go back on top.
 */
export function splitDockerChurn(findings: readonly Finding[]): { drift: Finding[]; churn: Finding[] } {
  const where = (f: Finding): string => `${f.family ?? ''}/${f.backend ?? ''}`;
  const atBackstop = (f: Finding): boolean => f.table === 'filter' && f.chain === FORWARD_CHAIN;
  const displacing = (f: Finding): boolean => f.kind === 'jump-not-first' || f.kind === 'foreign-undermining' || f.kind === 'jump-missing';
  const byDockerItself = (f: Finding): boolean =>
    f.kind === 'jump-missing' ? isFreshDockerUser(f.evidence) : (f.kind === 'jump-not-first' || f.kind === 'foreign-undermining') && f.evidence.length > 0 && f.evidence.every(isBridgeForwardRule);
  const byDocker = new Set(findings.filter((f) => atBackstop(f) && byDockerItself(f)).map(where));
  // A foreign rule above a jump shows up as its own foreign-undermining (and in jump-not-first's
  // evidence); a deleted FORWARD jump as a jump-missing with no evidence.
  for (const f of findings) if (atBackstop(f) && displacing(f) && !byDockerItself(f)) byDocker.delete(where(f));
  const isChurn = (f: Finding): boolean => atBackstop(f) && byDocker.has(where(f)) && (byDockerItself(f) || f.kind === 'unprotected');
  return { drift: findings.filter((f) => !isChurn(f)), churn: findings.filter(isChurn) };
}

/**
 * The evidence of a DOCKER-USER with no jump of ours (core/chain-findings) that is
 * DOCKER-USER as dockerd creates it: empty (`-N DOCKER-USER`), or its trailing RETURN only.
 */
function isFreshDockerUser(evidence: readonly string[]): boolean {
  const fresh = [`-N ${DOCKER_USER_CHAIN}`, `-A ${DOCKER_USER_CHAIN} -j RETURN`];
  return evidence.length > 0 && evidence.every((l) => fresh.includes(l));
}

/**
 * Whether a saved FORWARD rule has the shape Docker gives a bridge's rules: interface
 * matches (possibly negated) that all name one interface, at most a conntrack state
 * match, and a target. Anything else (an address, a port, another match) is not Docker's.
 */
export function isBridgeForwardRule(line: string): boolean {
  const words = line.split(' ');
  if (words[0] !== '-A' || words[1] !== 'FORWARD') return false;
  const interfaces = new Set<string>();
  let target = false;
  for (let i = 2; i < words.length; i++) {
    const w = words[i];
    const v = words[i + 1];
    if (w === '!') continue;
    if ((w === '-i' || w === '-o') && v !== undefined) interfaces.add(v);
    else if (w === '-m' && v === 'conntrack') {
      // `-m conntrack` is followed by its `--ctstate STATES` below.
    } else if (w === '--ctstate' && v !== undefined && /^[A-Z,]+$/.test(v)) {
      // a connection state list, e.g. RELATED,ESTABLISHED
    } else if (w === '-j' && v !== undefined && !target) target = true;
    else return false;
    i++;
  }
  return interfaces.size === 1 && target;
}

/**
 * How long the agent leaves Docker's rules for a new bridge above its `-j DOCKER-USER`
 * (core/chain-compare `awaitingDocker`) before it moves the FORWARD jump above them.
 * Docker moves its jump back on top within the same network create, in milliseconds; a
 * rule still there after this is not a create in progress. Meanwhile the nat catch-all
 * refuses the new bridge's containers, which cannot even be attached before the create ends.
 */
export const DOCKER_SETTLE_MS = 3_000;

/** When each of Docker's rules waited for was first seen above its `-j DOCKER-USER`. */
export type DockerSettling = ReadonlyMap<string, number>;

/** The rules a pass left for Docker (`awaiting`), each with when it was first seen; the others are forgotten. */
export function settlingAfter(before: DockerSettling, awaiting: readonly string[], now: number): Map<string, number> {
  return new Map(awaiting.map((line) => [line, before.get(line) ?? now]));
}

/** Whether a rule seen above Docker's `-j DOCKER-USER` may still be left for Docker: first seen now, or under `ms` ago. */
export function stillSettling(since: DockerSettling, now: number, ms = DOCKER_SETTLE_MS): (line: string) => boolean {
  return (line) => {
    const first = since.get(line);
    return first === undefined || now - first < ms;
  };
}
