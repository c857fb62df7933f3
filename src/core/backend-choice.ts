import type { Backend } from './family.js';
import { type SavedTable, hasChain, ruleCount as countRules } from './saved-table.js';

export interface BackendChoice {
  readonly backend: Backend;
  readonly reason: string;
}

// Docker's own nat chains: where they are is where Docker's rules live.
const DOCKER_CHAINS = ['DOCKER', 'DOCKER-INGRESS'];

const hasDocker = (t: SavedTable | null): boolean => t !== null && DOCKER_CHAINS.some((c) => hasChain(t, c));
const ruleCount = (t: SavedTable | null): number => (t === null ? 0 : countRules(t));

/**
 * Picks the backend our rules must share with Docker's. kubernetes-sigs/iptables-wrappers
 * guesses from kubelet's chains, which a Docker-only host does not have, so we look for
 * Docker's own chains in both. `legacy` is null when the legacy nat table is not loaded.
 */
export function chooseBackend(override: Backend | null, nft: SavedTable | null, legacy: SavedTable | null): BackendChoice {
  if (override !== null) return { backend: override, reason: `backend ${override} set by configuration` };
  const inNft = hasDocker(nft);
  const inLegacy = hasDocker(legacy);
  if (inNft && !inLegacy) return { backend: 'nft', reason: "Docker's nat chains are in the nft backend" };
  if (inLegacy && !inNft) return { backend: 'legacy', reason: "Docker's nat chains are in the legacy backend" };
  if (inNft && inLegacy) {
    // Both: a leftover from a switch of backend. The one with more rules is the live one.
    const backend = ruleCount(legacy) > ruleCount(nft) ? 'legacy' : 'nft';
    return { backend, reason: `Docker's nat chains are in both backends; ${backend} holds more rules` };
  }
  if (ruleCount(legacy) > 0) return { backend: 'legacy', reason: "no Docker chains found; the legacy nat table holds rules" };
  return { backend: 'nft', reason: 'no Docker chains found (Docker not started, or its native nftables firewall); nft is the default' };
}
