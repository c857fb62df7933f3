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
 * Only the backstop hook's findings whose evidence is nothing but such rules, for
 * interfaces Docker itself reports as its bridges, are split off; any other rule above
 * the jump (a foreign ACCEPT, a rule for an interface Docker does not own) keeps the
 * whole family's displacement drift.
 */
export function splitDockerChurn(findings: readonly Finding[], dockerBridges: ReadonlySet<string>): { drift: Finding[]; churn: Finding[] } {
  const where = (f: Finding): string => `${f.family ?? ''}/${f.backend ?? ''}`;
  const atBackstop = (f: Finding): boolean => f.table === 'filter' && f.chain === FORWARD_CHAIN;
  const displaced = findings.filter((f) => atBackstop(f) && f.kind === 'jump-not-first');
  const byDocker = new Set(displaced.filter((f) => f.evidence.length > 0 && f.evidence.every((l) => isDockerBridgeRule(l, dockerBridges))).map(where));
  // A foreign rule above the jump shows up as its own foreign-undermining (and in jump-not-first's evidence).
  for (const f of findings) if (atBackstop(f) && f.kind === 'foreign-undermining' && !f.evidence.every((l) => isDockerBridgeRule(l, dockerBridges))) byDocker.delete(where(f));
  const isChurn = (f: Finding): boolean => atBackstop(f) && byDocker.has(where(f)) && (f.kind === 'jump-not-first' || f.kind === 'foreign-undermining' || f.kind === 'unprotected');
  return { drift: findings.filter((f) => !isChurn(f)), churn: findings.filter(isChurn) };
}

/**
 * Whether a saved FORWARD rule has the shape Docker gives a bridge's rules: only
 * interface matches naming Docker's bridges (possibly negated), a conntrack state match,
 * and a target. Anything else (an address, a port, another match) is not Docker's.
 */
export function isDockerBridgeRule(line: string, dockerBridges: ReadonlySet<string>): boolean {
  const words = line.split(' ');
  if (words[0] !== '-A' || words[1] !== 'FORWARD') return false;
  let interfaces = 0;
  let target = false;
  for (let i = 2; i < words.length; i++) {
    const w = words[i];
    const v = words[i + 1];
    if (w === '!') continue;
    if ((w === '-i' || w === '-o') && v !== undefined && dockerBridges.has(v)) interfaces++;
    else if (w === '-m' && v === 'conntrack') {
      // `-m conntrack` is followed by its `--ctstate STATES` below.
    } else if (w === '--ctstate' && v !== undefined && /^[A-Z,]+$/.test(v)) {
      // a connection state list, e.g. RELATED,ESTABLISHED
    } else if (w === '-j' && v !== undefined && !target) target = true;
    else return false;
    i++;
  }
  return interfaces > 0 && target;
}
