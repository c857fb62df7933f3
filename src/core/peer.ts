import { createHash } from 'node:crypto';
import * as z from 'zod';
import type { Config } from './config.js';

/**
 * Another imds-guard process in this network namespace, as it describes itself when
 * asked on its abstract socket (src/shell/writer-lock.ts, src/shell/agent-presence.ts).
 * The answer is untrusted: any process of the namespace can bind those names and say
 * anything, so it is parsed strictly and only ever shown as the fields below.
 */
export interface PeerInfo {
  readonly pid: number;
  /** apply, remove or run. */
  readonly verb: string;
  readonly version: string;
  /** Agents only: configDigest of the configuration they run. */
  readonly configDigest?: string;
}

const MAX_ANSWER = 512;

const peerSchema = z.object({
  // Linux pid_max is at most 2^22.
  pid: z.number().int().min(1).max(4_194_304),
  verb: z.string().regex(/^[a-z][a-z-]{0,15}$/),
  version: z.string().regex(/^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$/),
  configDigest: z.string().regex(/^[0-9a-f]{16,64}$/).optional(),
});

/** The holder's one-line answer, or null when it gave none, or one that is not ours. */
export function parsePeerInfo(answer: string | null): PeerInfo | null {
  if (answer === null || answer.length > MAX_ANSWER) return null;
  let json: unknown;
  try {
    json = JSON.parse(answer);
  } catch {
    return null;
  }
  const parsed = peerSchema.safeParse(json);
  if (!parsed.success) return null;
  const { pid, verb, version, configDigest } = parsed.data;
  return configDigest === undefined ? { pid, verb, version } : { pid, verb, version, configDigest };
}

/** For messages: "imds-guard apply (pid 4242, version 0.1.0)". */
export function describePeer(peer: PeerInfo | null): string {
  if (peer === null) return 'a process that does not say it is imds-guard';
  return `imds-guard ${peer.verb} (pid ${peer.pid}, version ${peer.version})`;
}

/**
 * A short digest of the validated configuration, the same whatever order the keys came
 * in: two agents with equal digests write the same rules, so they can share a host.
 */
export function configDigest(config: Config): string {
  return createHash('sha256').update(canonicalJson(config)).digest('hex').slice(0, 16);
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export type OtherAgentDecision =
  /** Nobody else claims to be the agent here. */
  | { readonly action: 'start' }
  /** Start, but say so: passes are serialised by the writer lock, so nothing flip-flops. */
  | { readonly action: 'warn'; readonly message: string }
  /** Do not start: the two would rewrite each other's rules on every pass. */
  | { readonly action: 'refuse'; readonly message: string };

/** What a starting agent does about the process that holds the agent name (null: nobody does). */
export function decideOnOtherAgent(ourDigest: string, holder: { readonly answer: PeerInfo | null } | null): OtherAgentDecision {
  if (holder === null) return { action: 'start' };
  const other = holder.answer;
  if (other === null || other.verb !== 'run' || other.configDigest === undefined) {
    return { action: 'warn', message: `the agent name of this network namespace is held by ${describePeer(other)}; starting anyway (the writer lock still serialises every pass)` };
  }
  if (other.configDigest === ourDigest) {
    return { action: 'warn', message: `another agent, ${describePeer(other)}, runs in this network namespace with the same configuration; starting anyway (the writer lock serialises passes, but one agent is enough)` };
  }
  return {
    action: 'refuse',
    message: `another agent, ${describePeer(other)}, runs in this network namespace with a different configuration (digest ${other.configDigest}, ours ${ourDigest}): two agents would undo each other's rules; stop one or give both the same configuration`,
  };
}
