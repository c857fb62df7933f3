import { type PeerInfo, parsePeerInfo } from '../core/peer.js';
import { askAbstract, bindAbstract } from './abstract-socket.js';

/**
 * The running agent of a network namespace holds this abstract name for as long as it
 * runs and answers {pid, verb, version, configDigest}, so a second agent started in the
 * same namespace (an OpenRC service beside a Swarm task) finds it and its configuration.
 */
export const AGENT_NAME = 'imds-guard/agent';

const ASK_TIMEOUT_MS = 500;

export type AgentPresence =
  | { readonly kind: 'claimed'; release(): Promise<void> }
  /** Someone holds the name; `answer` is what it said about itself, validated (null: nothing usable). */
  | { readonly kind: 'taken'; readonly answer: PeerInfo | null };

/** Claims the agent name, answering with `info()` (read at each connection: a reload changes the digest). */
export async function claimAgentPresence(info: () => object, name = AGENT_NAME): Promise<AgentPresence> {
  const bound = await bindAbstract(name, () => JSON.stringify(info()));
  if (bound !== null) return { kind: 'claimed', release: () => bound.close() };
  return { kind: 'taken', answer: parsePeerInfo(await askAbstract(name, ASK_TIMEOUT_MS)) };
}
