/**
 * Names imds-guard owns. Everything else in the tables belongs to someone else and is
 * never named in a change.
 */
export type OwnedChainName = 'IMDS-GUARD' | 'IMDS-GUARD-FWD' | 'IMDS-GUARD-OUT';
/** nat PREROUTING: every connection the host forwards to an endpoint is turned away. */
export const NAT_CHAIN = 'IMDS-GUARD';
/** filter FORWARD: the backstop for a packet that skipped NAT (NOTRACK, a foreign DNAT that won). */
export const FORWARD_CHAIN = 'IMDS-GUARD-FWD';
/** filter OUTPUT: host-network containers, told from the host's own processes by cgroup. */
export const OUTPUT_CHAIN = 'IMDS-GUARD-OUT';
export const OWNED_CHAINS: readonly OwnedChainName[] = [NAT_CHAIN, FORWARD_CHAIN, OUTPUT_CHAIN];
export const JUMP_COMMENT = 'imds-guard: metadata endpoint protection';
/** Each rule's comment carries a short id of its content, like Calico's rule hashes. */
export const RULE_COMMENT_PREFIX = 'imds-guard:';
export const BOOT_SCRIPT_NAME = 'imds-guard.start';

/**
 * Docker's filter chain for its users' rules. Docker keeps FORWARD's `-j DOCKER-USER` the
 * first rule of FORWARD (it moves it back on top at every network create and daemon
 * start) and never flushes the chain (it only creates it, with a trailing RETURN), so
 * our backstop jump at its top stays first where Docker's own bridge rules in FORWARD
 * keep pushing our FORWARD jump down. Never ours: we neither create it nor touch its rules.
 */
export const DOCKER_USER_CHAIN = 'DOCKER-USER';

export function isOwnedChain(name: string): name is OwnedChainName {
  return (OWNED_CHAINS as readonly string[]).includes(name);
}

// The kernel's dev_valid_name(): 1..15 bytes (IFNAMSIZ 16 with the NUL), not "." or
// "..", no '/', ':' or whitespace.
const IFNAMSIZ = 16;

/**
 * Why `name` cannot be an interface the config allows, or null. Allowed interfaces are
 * literal names (no iptables '+' wildcard: an exception must name exactly what it
 * exempts), printable ASCII, and free of what a shell script or a payload could misread.
 */
export function interfaceNameProblem(name: string): string | null {
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name, 'utf8') > IFNAMSIZ - 1) return `is longer than ${IFNAMSIZ - 1} bytes`;
  if (name === '.' || name === '..') return 'is not a valid name';
  if (name.includes('+')) return "is a wildcard ('+'): an allowed interface must be named exactly";
  if (!/^[\x21-\x7e]*$/.test(name)) return 'contains whitespace or a non-printable character';
  if (/[/:"'\\`$!]/.test(name)) return 'contains a character the kernel or a shell script cannot take (/ : quote, backslash, $, !)';
  return null;
}


