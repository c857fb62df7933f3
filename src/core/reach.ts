import { ipToBigInt, ipVersion } from './ip.js';
import type { Endpoint } from './endpoint.js';
import { type Rule, ruleTarget } from './rule.js';

// Targets that let the packet continue down the chain: a rule with one of these
// cannot take endpoint traffic away from our jump below it.
const NON_TERMINATING = new Set(['LOG', 'NFLOG', 'ULOG', 'MARK', 'CONNMARK', 'TRACE', 'AUDIT', 'TTL', 'HL', 'TOS', 'DSCP', 'CLASSIFY', 'SET', 'CONNSECMARK', 'SECMARK']);
// Targets that end the packet: they block too, so they never undermine a block below.
const BLOCKING = new Set(['DROP', 'REJECT']);
// How deep jumps into user chains are followed before a rule is assumed to intercept.
const MAX_DEPTH = 8;

/** Where the rule stands: the chains of its table (to follow jumps), and the interfaces that keep access anyway. */
export interface ReachScope {
  /** The rules of a user chain of the same table, or undefined when the table has no such chain. */
  readonly chain: (name: string) => readonly Rule[] | undefined;
  /** Allowed interfaces: a rule that matches only these cannot take protected traffic. */
  readonly allowed: readonly string[];
}

/**
 * Whether `rule`, placed before our jump in a built-in chain, can match a new connection
 * to `endpoint` from a protected source and stop it reaching our chain. Unknown matches
 * are assumed to match (fail safe); only what provably excludes the endpoint makes a
 * rule harmless: Swarm's `-m addrtype --dst-type LOCAL -j DOCKER-INGRESS` can never see
 * a packet to a link-local address that is not on the host, and Docker's
 * `-j DOCKER-USER` at the top of FORWARD only returns unless someone put more in it.
 */
export function canIntercept(rule: Rule, endpoint: Endpoint, scope: ReachScope, depth = 0, inUserChain = false): boolean {
  const target = ruleTarget(rule);
  if (target === undefined || NON_TERMINATING.has(target) || BLOCKING.has(target)) return false;
  if (!matchesEndpoint(rule, endpoint, scope.allowed)) return false;
  // RETURN in a user chain hands the packet back to the caller, which goes on to our jump.
  if (target === 'RETURN' && inUserChain) return false;
  const sub = scope.chain(target);
  if (sub !== undefined) {
    if (depth >= MAX_DEPTH) return true;
    return sub.some((r) => canIntercept(r, endpoint, scope, depth + 1, true));
  }
  return true;
}

/** Whether the rule's matches can hold for a connection to `endpoint` from a protected source. */
export function matchesEndpoint(rule: Rule, endpoint: Endpoint, allowed: readonly string[]): boolean {
  for (const o of rule.options) {
    const v = o.values[0] ?? '';
    switch (o.name) {
      case '-d':
      case '--destination':
      case '--dst': {
        const inside = cidrContains(v, endpoint.address);
        if (inside === null) break;
        if (inside === o.negated) return false;
        break;
      }
      case '-i':
      case '--in-interface': {
        // Only a rule naming nothing but allowed interfaces is harmless: every other
        // interface's traffic is protected.
        if (!o.negated && !v.endsWith('+') && allowed.includes(v)) return false;
        break;
      }
      case '-p':
      case '--protocol': {
        const isTcp = v === 'tcp' || v === '6';
        const any = v === 'all' || v === '0';
        if (!o.negated && !isTcp && !any) return false;
        if (o.negated && (isTcp || any)) return false;
        break;
      }
      case '--dport':
      case '--destination-port':
      case '--dports':
      case '--destination-ports': {
        const hit = portListContains(v, endpoint.port);
        if (hit === null) break;
        if (hit === o.negated) return false;
        break;
      }
      case '--dst-type': {
        // The endpoint is never a local address of the host, so LOCAL never matches it.
        const types = v.split(',');
        if (!o.negated && types.every((t) => t === 'LOCAL')) return false;
        break;
      }
      default:
        break;
    }
  }
  return true;
}


function portListContains(spec: string, port: number): boolean | null {
  const parts = spec.split(',');
  let known = true;
  for (const p of parts) {
    const [lo, hi] = p.split(':');
    const from = Number(lo === '' ? 0 : lo);
    const to = hi === undefined ? from : Number(hi === '' ? 65535 : hi);
    if (Number.isNaN(from) || Number.isNaN(to)) known = false;
    else if (port >= from && port <= to) return true;
  }
  return known ? false : null;
}

/** Whether `address` lies in `cidr`; null when `cidr` is not something we can read (a hostname). */
export function cidrContains(cidr: string, address: string): boolean | null {
  const [net = '', lenText] = cidr.split('/');
  const fam = ipVersion(net);
  if (fam === 0 || fam !== ipVersion(address)) return fam === 0 ? null : false;
  const bits = fam === 4 ? 32 : 128;
  const len = lenText === undefined ? bits : lenText.includes('.') ? maskLength(lenText) : Number(lenText);
  if (len === null || Number.isNaN(len)) return null;
  const a = ipToBigInt(net);
  const b = ipToBigInt(address);
  const shift = BigInt(bits - len);
  return a >> shift === b >> shift;
}

function maskLength(mask: string): number | null {
  if (ipVersion(mask) !== 4) return null;
  const n = ipToBigInt(mask);
  const s = n.toString(2).padStart(32, '0');
  return /^1*0*$/.test(s) ? s.indexOf('0') === -1 ? 32 : s.indexOf('0') : null;
}

