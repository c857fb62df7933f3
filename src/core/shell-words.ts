import type { Backend, Family } from './family.js';

/**
 * One argument quoted for a POSIX shell, so a command a finding prints can be pasted as
 * it is: a rule read back from the table may carry a planted comment such as `$(...)`,
 * which inside single quotes is only text.
 */
export function shellQuote(arg: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function commandLine(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}

/** The iptables command for one family and backend, spelled so it addresses that backend whatever `iptables` points at. */
export function iptablesCommand(family: Family, backend: Backend): string {
  return `${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${backend}`;
}
