export type Family = 'ipv4' | 'ipv6';
export const FAMILIES: readonly Family[] = ['ipv4', 'ipv6'];

/** iptables backends: Docker's rules live in one of them and ours must live beside them. */
export type Backend = 'nft' | 'legacy';
export const BACKENDS: readonly Backend[] = ['nft', 'legacy'];

export function otherBackend(b: Backend): Backend {
  return b === 'nft' ? 'legacy' : 'nft';
}
