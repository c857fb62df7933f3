/**
 * Reads a V8 `.cpuprofile` (node --cpu-prof) into self time per part of the program:
 * node's module loader, each npm package, each directory of dist/, garbage collection,
 * and idle time (the event loop waiting, here on iptables-save).
 */
interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
}

export interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface ProfileSummary {
  /** From the profiler's start (after node's bootstrap) to its end (at exit), ms. */
  readonly durationMs: number;
  readonly groups: Readonly<Record<string, number>>;
  readonly topFunctions: readonly { readonly fn: string; readonly ms: number }[];
}

export function groupOf(url: string, fn: string): string {
  if (url === '') {
    if (fn === '(idle)') return 'idle (waiting on child processes, I/O)';
    if (fn === '(garbage collector)') return 'garbage collection';
    if (fn === '(program)') return 'V8/native, not attributed (incl. compiling)';
    return 'native bindings (fs, process spawn, ...)';
  }
  if (url.startsWith('node:internal/modules') || url.startsWith('node:internal/vm')) return 'node: module loader';
  if (url.startsWith('node:')) return 'node: other internals';
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg !== null) return `package ${pkg[1]}`;
  const dist = /\/dist\/(?:([^/]+)\/)?[^/]+$/.exec(url);
  if (dist !== null) return `imds-guard dist/${dist[1] ?? '(top: cli.js, errors.js)'}`;
  return 'other';
}

export function summarizeProfile(p: CpuProfile): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const groups: Record<string, number> = {};
  const fns = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (n === undefined) continue;
    const { url, functionName, lineNumber } = n.callFrame;
    const g = groupOf(url, functionName);
    groups[g] = (groups[g] ?? 0) + us / 1000;
    const key = url === '' ? functionName : `${functionName || '(anonymous)'} ${url.replace(/^.*\/(node_modules|dist)\//, '$1/')}:${lineNumber + 1}`;
    fns.set(key, (fns.get(key) ?? 0) + us / 1000);
  }
  const topFunctions = [...fns].filter(([k]) => !k.startsWith('(')).sort((a, b) => b[1] - a[1]).slice(0, 10).map(([fn, ms]) => ({ fn, ms }));
  return { durationMs: (p.endTime - p.startTime) / 1000, groups, topFunctions };
}

/** Averages several runs' summaries (group by group). */
export function averageSummaries(s: readonly ProfileSummary[]): ProfileSummary {
  const n = Math.max(1, s.length);
  const groups: Record<string, number> = {};
  for (const x of s) for (const [g, ms] of Object.entries(x.groups)) groups[g] = (groups[g] ?? 0) + ms / n;
  const fns = new Map<string, number>();
  for (const x of s) for (const f of x.topFunctions) fns.set(f.fn, (fns.get(f.fn) ?? 0) + f.ms / n);
  return {
    durationMs: s.reduce((a, x) => a + x.durationMs, 0) / n,
    groups,
    topFunctions: [...fns].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([fn, ms]) => ({ fn, ms })),
  };
}
