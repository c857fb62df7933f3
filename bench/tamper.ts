import { performance } from 'node:perf_hooks';
import { createTestCgroup } from '../test/helpers/cgroup.js';
import { type LogLine, startNetnsAgent } from './daemon.js';
import type { BenchContext, BenchModule } from './module.js';
import { type NatLab, openNatLab } from './nat-lab.js';
import { cleanEnv, mustSucceed, removeTempDir, tempDir } from './proc.js';
import { type Target, round } from './stats.js';
import { renderTable } from './table.js';

/**
 * Issue "hostile neighbours": how long a tampered nat table stays open with the agent
 * running (nft backend, the headline table, no Docker, the default 30 s drift schedule).
 * Three tampers, taking turns: our chain flushed, our PREROUTING jump deleted, an ACCEPT for the
 * endpoint inserted above the jump. The time is from the tampering command's exit to the
 * first poll (every POLL_MS, `iptables-nft -t nat -S` of PREROUTING and our chain) that
 * shows both as they were when converged; whatever wakes the agent (the drift schedule,
 * a netfilter monitor) is what is measured. A tamper not repaired within the cap counts
 * as "> cap" and the table is put back by hand (the saved converged nat table restored).
 * A kind stops early once its median is decided to be over the cap (more than half the
 * planned samples over it), or when its first CAPPED_TO_STOP are all over it: it is
 * schedule-bound, and waiting out 20 x 30 s would say only that.
 */
const POLL_MS = 20;
const CAPPED_TO_STOP = 3;
const CHAIN = 'IMDS-GUARD';
const TARGET_MS = 1000;
// The fight: how many identical tampers in a row, the wait before it (so the turns above
// have left no backoff behind: no repair for two intervals), and its longer cap.
const FIGHT_ROUNDS = 7;
const FIGHT_QUIET_MS = 2_000;
const FIGHT_CAP_MS = 8_000;

type Kind = 'flush-chain' | 'delete-jump' | 'accept-above-jump';
const KINDS: readonly Kind[] = ['flush-chain', 'delete-jump', 'accept-above-jump'];

export interface KindResult {
  readonly kind: Kind;
  /** ms from the tamper to protection back; null: not within the cap. */
  readonly samples: readonly (number | null)[];
  readonly p50: number | null;
  readonly p99: number | null;
  readonly stoppedEarly: boolean;
  /** What woke the passes that repaired (the agent's `reasons`), with counts. */
  readonly wokenBy: Readonly<Record<string, number>>;
}

export interface TamperResult {
  readonly rules: number;
  readonly capMs: number;
  readonly schedule: string;
  readonly kinds: readonly KindResult[];
  /** The same tamper again as soon as it was repaired: ms until each repair (null: over FIGHT_CAP_MS). */
  readonly fight: readonly (number | null)[];
}

interface Listing {
  readonly prerouting: readonly string[];
  readonly chain: readonly string[];
}

async function listing(lab: NatLab): Promise<Listing> {
  const [p, c] = await Promise.all([lab.ns.run('iptables-nft', ['-w', '5', '-t', 'nat', '-S', 'PREROUTING']), lab.ns.run('iptables-nft', ['-w', '5', '-t', 'nat', '-S', CHAIN])]);
  const rules = (text: string, chain: string): string[] => text.split('\n').filter((l) => l.startsWith(`-A ${chain} `));
  return { prerouting: p.code === 0 ? rules(p.stdout, 'PREROUTING') : [], chain: c.code === 0 ? rules(c.stdout, CHAIN) : [] };
}

/** Protected as when converged: the same first PREROUTING rule (our jump) and the same chain. */
function isProtected(now: Listing, converged: Listing): boolean {
  return now.prerouting[0] === converged.prerouting[0] && now.chain.length === converged.chain.length && now.chain.every((l, i) => l === converged.chain[i]);
}

const ACCEPT = ['-d', '169.254.169.254/32', '-p', 'tcp', '-m', 'tcp', '--dport', '80', '-j', 'ACCEPT'];

async function tamper(lab: NatLab, kind: Kind, converged: Listing): Promise<void> {
  const args: Record<Kind, string[]> = {
    'flush-chain': ['-t', 'nat', '-F', CHAIN],
    'delete-jump': ['-t', 'nat', '-D', 'PREROUTING', String(converged.prerouting.findIndex((l) => l.endsWith(`-j ${CHAIN}`)) + 1)],
    'accept-above-jump': ['-t', 'nat', '-I', 'PREROUTING', '1', ...ACCEPT],
  };
  mustSucceed(`tamper ${kind}`, await lab.ns.run('iptables-nft', ['-w', '5', ...args[kind]]));
}

/**
 * After a repair the foreign ACCEPT may stay below our jump (harmless there); it is
 * taken out, untimed, so every sample meets the converged table. Exit 1: already gone.
 */
async function untamper(lab: NatLab, kind: Kind): Promise<void> {
  if (kind !== 'accept-above-jump') return;
  const r = await lab.ns.run('iptables-nft', ['-w', '5', '-t', 'nat', '-D', 'PREROUTING', ...ACCEPT]);
  if (r.code !== 0 && r.code !== 1) throw new Error(`iptables-nft -D (cleanup) exited ${r.code}: ${r.stderr.trim()}`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitProtected(lab: NatLab, converged: Listing, capMs: number): Promise<number | null> {
  const t0 = performance.now();
  for (;;) {
    if (isProtected(await listing(lab), converged)) return performance.now() - t0;
    if (performance.now() - t0 > capMs) return null;
    await sleep(POLL_MS);
  }
}

/** Nearest rank; a capped sample is larger than any other. */
function rank(samples: readonly (number | null)[], p: number): number | null {
  const s = samples.map((x) => x ?? Number.POSITIVE_INFINITY).sort((a, b) => a - b);
  const v = s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
  return v === undefined || !Number.isFinite(v) ? null : round(v);
}

async function runTamper(ctx: BenchContext): Promise<TamperResult> {
  const lab = await openNatLab('nft', ctx.args.rules);
  const cgroup = createTestCgroup();
  const dir = tempDir('tamper');
  const capMs = ctx.args.tamperCapMs;
  try {
    mustSucceed('first apply', await lab.ns.run(process.execPath, [ctx.cli, 'apply', '--no-docker', '--boot-script', 'never', '--cgroup-parent', cgroup.path], { env: cleanEnv() }));
    const converged = await listing(lab);
    if (!converged.prerouting[0]?.endsWith(`-j ${CHAIN}`) || converged.chain.length === 0) throw new Error(`after apply, PREROUTING does not start with the jump to ${CHAIN}: ${converged.prerouting[0] ?? '(empty)'}`);
    const saved = mustSucceed('save of the converged nat table', await lab.save('ipv4')).stdout;
    const agent = await startNetnsAgent({ cli: ctx.cli, ns: lab.ns, dir, cgroupParent: cgroup.path });
    const kinds: KindResult[] = [];
    const fight: (number | null)[] = [];
    try {
      await sleep(1_000);
      // The kinds take turns, so consecutive repairs differ: each sample is one tamper, as
      // an operator's mistake or an attacker's single step is. The same tamper again and
      // again is a fight, which the agent meets with a backoff (measured after this).
      const state = new Map(KINDS.map((k) => [k, { samples: [] as (number | null)[], wokenBy: {} as Record<string, number>, stoppedEarly: false }]));
      ctx.progress(`tamper: ${KINDS.join(', ')} in turn, up to ${ctx.args.tamperRuns} times each (cap ${capMs} ms)`);
      for (let i = 0; i < ctx.args.tamperRuns; i++) {
        for (const kind of KINDS) {
          const k = state.get(kind)!;
          if (k.stoppedEarly) continue;
          const from = agent.mark();
          await tamper(lab, kind, converged);
          const ms = await waitProtected(lab, converged, capMs);
          k.samples.push(ms === null ? null : round(ms));
          if (ms === null) {
            // Put it back by hand (the whole nat table replaced by its converged copy).
            mustSucceed('restore of the converged nat table', await lab.ns.run('iptables-nft-restore', ['-w', '5'], { input: saved }));
            const capped = k.samples.filter((x) => x === null).length;
            if ((k.samples.length >= CAPPED_TO_STOP && capped === k.samples.length) || capped > ctx.args.tamperRuns / 2) k.stoppedEarly = true;
          } else {
            const repair = await agent.waitFor('the repairing pass', (l: LogLine) => l.event === 'repaired', { from, timeoutMs: 5_000 }).catch(() => null);
            for (const r of Array.isArray(repair?.reasons) ? (repair.reasons as unknown[]) : ['(no repaired line)']) k.wokenBy[String(r)] = (k.wokenBy[String(r)] ?? 0) + 1;
            await untamper(lab, kind);
          }
          // A random pause, so tampers fall at every phase of whatever schedule the agent keeps.
          await sleep(200 + Math.random() * 400);
          if (!isProtected(await listing(lab), converged)) throw new Error(`after ${kind}, the table did not stay protected`);
        }
      }
      for (const kind of KINDS) {
        const k = state.get(kind)!;
        kinds.push({ kind, samples: k.samples, p50: rank(k.samples, 50), p99: rank(k.samples, 99), stoppedEarly: k.stoppedEarly, wokenBy: k.wokenBy });
      }
      // A fight: the same flush again as soon as the chain is back.
      ctx.progress(`tamper: a fight, the chain flushed ${FIGHT_ROUNDS} times in a row`);
      await sleep(FIGHT_QUIET_MS);
      for (let i = 0; i < FIGHT_ROUNDS; i++) {
        await tamper(lab, 'flush-chain', converged);
        const ms = await waitProtected(lab, converged, FIGHT_CAP_MS);
        fight.push(ms === null ? null : round(ms));
        if (ms === null) mustSucceed('restore of the converged nat table', await lab.ns.run('iptables-nft-restore', ['-w', '5'], { input: saved }));
      }
    } finally {
      await agent.stop();
    }
    return { rules: lab.foreign.ipv4, capMs, schedule: '*/30 * * * * * (the default)', kinds, fight };
  } finally {
    lab.destroy();
    cgroup.destroy();
    removeTempDir(dir);
  }
}

function targetsOf(r: TamperResult): Target[] {
  return r.kinds.map((k) => ({
    id: `tamper.${k.kind}`,
    what: `nft: ${k.kind} -> protection back, median of ${k.samples.length}`,
    target: `< ${TARGET_MS} ms`,
    value: k.p50 === null ? `> ${r.capMs} ms (cap)` : `${k.p50} ms (p99 ${k.p99 === null ? `> ${r.capMs}` : k.p99})`,
    met: k.p50 !== null && k.p50 < TARGET_MS,
  }));
}

function renderTamper(r: TamperResult): string {
  const shown = (x: number | null): string => (x === null ? `> ${r.capMs}` : String(x));
  const rows = r.kinds.map((k) => [
    k.kind,
    `${k.samples.length}${k.stoppedEarly ? ' (stopped early: median over the cap)' : ''}`,
    shown(k.p50),
    shown(k.p99),
    String(k.samples.filter((x) => x === null).length),
    Object.entries(k.wokenBy).map(([w, n]) => `${w} x${n}`).join(', '),
  ]);
  return [
    `tamper-to-repair, nft backend, ${r.rules} foreign IPv4 nat rules, the agent running with drift schedule ${r.schedule}, no Docker; polled every ${POLL_MS} ms`,
    renderTable(['tamper', '>samples', '>median ms', '>p99 ms', '>over the cap', 'woken by (repairing pass reasons)'], rows),
    `beside the 30 s drift schedule alone: a tamper at a random moment waits 15 s on average, 30 s at worst`,
    `a fight (the chain flushed again as soon as it is back, ${r.fight.length} times): ms until each repair ${r.fight.map((x) => (x === null ? `> ${FIGHT_CAP_MS}` : String(x))).join(', ')}; the same repair waits twice as long each time (up to 30 s), while a different one is made at once`,
  ].join('\n');
}

export const tamperModule: BenchModule = {
  name: 'tamper',
  description: 'nft: chain flushed, jump deleted, ACCEPT above the jump, with the agent running: time until the protection is back',
  async run(ctx) {
    const result = await runTamper(ctx);
    return { result, text: renderTamper(result), targets: targetsOf(result) };
  },
};
