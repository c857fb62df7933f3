/**
 * The probe child: run by src/shell/probe.ts as
 *   nsenter --net=/proc/self/fd/3 -- node dist/probe-child.cjs SPEC
 * so it stands in a container's network namespace. It opens one TCP connection per
 * endpoint, closes each the moment it opens (no request is sent, nothing is read), and
 * prints one JSON line per endpoint: {"i":N,"result":"refused|timeout|connected|error","ms":M,"code":C}.
 *
 * It is bundled on its own (scripts/build.mjs) and imports nothing but node:net and
 * node:fs: a node start-up is most of what a probe costs, and 50 networks start 50 of these.
 * It never imports the rest of imds-guard.
 *
 * Exit status: 0 done; 2 bad SPEC; 3 not in the namespace it was sent to; 4 could not
 * join the container's cgroup. On 3 and 4 it opens no socket at all and prints one
 * line {"fatal":"netns"|"cgroup","code":C}.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';

interface Spec {
  timeoutMs: number;
  /** Inode of the namespace the parent opened: proves nsenter really put us there. */
  netnsIno: number;
  /** For host-network containers: join this cgroup (v2) before any socket exists. */
  cgroup: { procs: string; path: string } | null;
  endpoints: { family: 'ipv4' | 'ipv6'; address: string; port: number }[];
}

function emit(line: object): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function fatal(kind: string, code: string, status: number): never {
  emit({ fatal: kind, code });
  process.exit(status);
}

function parseSpec(text: string | undefined): Spec {
  try {
    const s = JSON.parse(text ?? '') as Spec;
    const ok =
      Number.isInteger(s.timeoutMs) && s.timeoutMs > 0 && Number.isInteger(s.netnsIno) && Array.isArray(s.endpoints) &&
      s.endpoints.every((e) => (e.family === 'ipv4' || e.family === 'ipv6') && typeof e.address === 'string' && Number.isInteger(e.port)) &&
      (s.cgroup === null || (typeof s.cgroup.procs === 'string' && s.cgroup.procs.endsWith('/cgroup.procs') && typeof s.cgroup.path === 'string'));
    if (ok) return s;
  } catch {
    // falls through to the refusal below
  }
  return fatal('spec', 'EINVAL', 2);
}

function errnoOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
}

const spec = parseSpec(process.argv[2]);

try {
  if (statSync('/proc/self/ns/net').ino !== spec.netnsIno) fatal('netns', 'EMISMATCH', 3);
} catch (e) {
  fatal('netns', errnoOf(e), 3);
}

// The cgroup match of iptables tests the cgroup a socket was created in, so the move
// comes first, and is checked, before any socket exists.
if (spec.cgroup !== null) {
  try {
    writeFileSync(spec.cgroup.procs, String(process.pid));
    const lines = readFileSync('/proc/self/cgroup', 'utf8').split('\n');
    if (!lines.includes(`0::${spec.cgroup.path}`)) fatal('cgroup', 'EMISMATCH', 4);
  } catch (e) {
    fatal('cgroup', errnoOf(e), 4);
  }
}

// A last resort: whatever happens to a socket, this child ends soon after its timeout.
setTimeout(() => process.exit(5), spec.timeoutMs + 500).unref();

spec.endpoints.forEach((e, i) => {
  const t0 = performance.now();
  let done = false;
  const finish = (result: string, code: string | null): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    socket.destroy();
    emit({ i, result, ms: Math.round((performance.now() - t0) * 10) / 10, code });
  };
  const socket = connect({ host: e.address, port: e.port, family: e.family === 'ipv4' ? 4 : 6, autoSelectFamily: false });
  const timer = setTimeout(() => finish('timeout', null), spec.timeoutMs);
  socket.once('connect', () => finish('connected', null));
  socket.once('error', (err: NodeJS.ErrnoException) => {
    const code = err.code ?? 'EUNKNOWN';
    finish(code === 'ECONNREFUSED' ? 'refused' : code === 'ETIMEDOUT' ? 'timeout' : 'error', code);
  });
});
