/** Names imds-guard owns in the nat table. Everything else there belongs to someone else. */
export const CHAIN = 'IMDS-GUARD';
export const JUMP_COMMENT = 'imds-guard: metadata endpoint protection';
/** Each rule's comment carries a short id of its content, like Calico's rule hashes. */
export const RULE_COMMENT_PREFIX = 'imds-guard:';
export const BOOT_SCRIPT_NAME = 'imds-guard.start';

// The kernel's dev_valid_name(): 1..15 bytes (IFNAMSIZ 16 with the NUL), not "." or
// "..", no '/', ':' or whitespace. iptables adds the trailing '+' wildcard.
const IFNAMSIZ = 16;

/** Returns why `name` is not a valid interface name or iptables wildcard, or null. */
export function interfaceNameProblem(name: string): string | null {
  const base = name.endsWith('+') ? name.slice(0, -1) : name;
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name, 'utf8') > IFNAMSIZ - 1) return `is longer than ${IFNAMSIZ - 1} bytes`;
  if (base === '.' || base === '..') return 'is not a valid name';
  if (base.includes('+')) return "may use '+' only as the last character";
  // Printable ASCII only: iptables prints names raw, and the name ends up in a shell script.
  if (!/^[\x21-\x7e]*$/.test(base)) return 'contains whitespace or a non-printable character';
  if (/[/:"'\\`$!]/.test(base)) return 'contains a character the kernel or a shell script cannot take (/ : quote, backslash, $, !)';
  return null;
}

export function isInterfaceName(name: string): boolean {
  return interfaceNameProblem(name) === null;
}

/** Whether iptables' `-i pattern` (with its trailing-'+' wildcard) matches interface `name`. */
export function interfacePatternMatches(pattern: string, name: string): boolean {
  if (pattern.endsWith('+')) return name.startsWith(pattern.slice(0, -1));
  return pattern === name;
}
