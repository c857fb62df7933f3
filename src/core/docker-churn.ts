import type { Finding } from './findings.js';
import { FORWARD_CHAIN } from './names.js';

/**
 * Docker's own churn above the backstop jump, told from drift.
 *
 * When dockerd creates a bridge network, and when it starts, it inserts that bridge's
 * rules at the top of filter FORWARD (`-o BR -m conntrack --ctstate RELATED,ESTABLISHED
 * -j ACCEPT`, `-o BR -j DOCKER`, `-i BR ! -o BR -j ACCEPT`, `-i BR -o BR -j ACCEPT`;
 * Docker 20.10 `iptables -I FORWARD`), then puts its DOCKER-USER and isolation jumps back
 * on top. Our backstop jump then sits below the new bridge's ACCEPT until the next pass
 * moves it back (the nat catch-all refuses that bridge's containers all the while). That
 * is Docker doing its job on every `network create`, not someone undoing ours: the pass
 * still repairs it, but it is not counted or alerted on as drift.
 *
 * The rules are told by their shape, not by Docker's list of bridges: Docker writes them
 * before the new network shows in its API (a drift check in between saw a bridge Docker
 * did not list yet), and another runtime's bridge rules of the same shape are the same
 * churn. Only the backstop hook's findings whose evidence is nothing but such rules are
 * split off; any other rule above the jump (a foreign ACCEPT for the endpoint, anything
 * matching addresses or ports) keeps the whole family's displacement drift. Either way
 * the jump goes back on top.
 */
export function splitDockerChurn(findings: readonly Finding[]): { drift: Finding[]; churn: Finding[] } {
  const where = (f: Finding): string => `${f.family ?? ''}/${f.backend ?? ''}`;
  const atBackstop = (f: Finding): boolean => f.table === 'filter' && f.chain === FORWARD_CHAIN;
  const allBridgeRules = (f: Finding): boolean => f.evidence.length > 0 && f.evidence.every(isBridgeForwardRule);
  const byDocker = new Set(findings.filter((f) => atBackstop(f) && f.kind === 'jump-not-first' && allBridgeRules(f)).map(where));
  // A foreign rule above the jump shows up as its own foreign-undermining (and in jump-not-first's evidence).
  for (const f of findings) if (atBackstop(f) && f.kind === 'foreign-undermining' && !allBridgeRules(f)) byDocker.delete(where(f));
  const isChurn = (f: Finding): boolean => atBackstop(f) && byDocker.has(where(f)) && (f.kind === 'jump-not-first' || f.kind === 'foreign-undermining' || f.kind === 'unprotected');
  return { drift: findings.filter((f) => !isChurn(f)), churn: findings.filter(isChurn) };
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
