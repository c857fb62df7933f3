import { existsSync, readFileSync } from 'node:fs';
import { SourceMap, type SourceMapPayload } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Reads a V8 `.cpuprofile` (node --cpu-prof) into self time per part of the program:
 * node's module loader, each npm package, each directory of imds-guard's src/, garbage
 * collection, and idle time (the event loop waiting, here on iptables-save).
 *
 * dist/ is one esbuild bundle, so a profiled function's URL says only which chunk holds
 * it; where it came from is in the chunk's linked sourcemap. The profile's URLs and
 * positions are the bundle's (`--enable-source-maps` rewrites stack traces, not
 * profiles), so each function's start is mapped back here.
 */
interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number; readonly columnNumber: number };
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

/**
 * Where a function of the bundle was written: an absolute path (src/ or node_modules/)
 * and a 0-based line; or, for a chunk's top-level code, which inlines the top level of
 * every ES module in it, the paths of all of them.
 */
export type Origin = { readonly path: string; readonly line: number } | { readonly topLevelOf: readonly string[] };

/** Maps a position in a script (the profile's URL, 0-based line and column) to its origin, or null when unmapped. */
export type Locate = (url: string, line: number, column: number) => Origin | null;

/**
 * A `Locate` through each script's linked sourcemap (`//# sourceMappingURL=`, read once
 * per script). Positions the map does not cover, such as esbuild's own runtime helpers,
 * stay unmapped.
 */
export function sourceMapLocator(): Locate {
  const maps = new Map<string, { map: SourceMap; dir: string } | null>();
  const mapOf = (url: string): { map: SourceMap; dir: string } | null => {
    if (!maps.has(url)) maps.set(url, loadLinkedMap(url));
    return maps.get(url) ?? null;
  };
  return (url, line, column) => {
    const m = mapOf(url);
    if (m === null) return null;
    // V8 reports a module's top-level code as a function at 0:0, which is the banner.
    if (line === 0 && column === 0) return { topLevelOf: m.map.payload.sources.map((s) => resolve(m.dir, s)) };
    const e = m.map.findEntry(line, column);
    if (!('originalSource' in e)) return null;
    return { path: resolve(m.dir, e.originalSource), line: e.originalLine };
  };
}

function loadLinkedMap(url: string): { map: SourceMap; dir: string } | null {
  if (!url.startsWith('file:')) return null;
  const file = fileURLToPath(url);
  if (!existsSync(file)) return null;
  const link = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(readFileSync(file, 'utf8'));
  if (link?.[1] === undefined || link[1].startsWith('data:')) return null;
  const mapFile = resolve(dirname(file), link[1]);
  if (!existsSync(mapFile)) return null;
  // esbuild writes no sourceRoot; `sources` are then relative to the map's own directory.
  const payload = JSON.parse(readFileSync(mapFile, 'utf8')) as Omit<SourceMapPayload, 'sourceRoot'> & { sourceRoot?: string };
  return { map: new SourceMap({ ...payload, sourceRoot: payload.sourceRoot ?? '' }), dir: resolve(dirname(mapFile), payload.sourceRoot ?? '') };
}

/** The group of a function, from where it was written (its origin when mapped, else its URL). */
export function groupOf(url: string, fn: string, origin: Origin | null): string {
  if (url === '') {
    if (fn === '(idle)') return 'idle (waiting on child processes, I/O)';
    if (fn === '(garbage collector)') return 'garbage collection';
    if (fn === '(program)') return 'V8/native, not attributed (incl. compiling)';
    return 'native bindings (fs, process spawn, ...)';
  }
  if (url.startsWith('node:internal/modules') || url.startsWith('node:internal/vm')) return 'node: module loader';
  if (url.startsWith('node:')) return 'node: other internals';
  if (origin !== null && 'topLevelOf' in origin) {
    // Attributable when every module of the chunk comes from one place (zod's chunk, say).
    const groups = new Set(origin.topLevelOf.map(groupOfPath));
    const [only] = groups;
    return groups.size === 1 && only !== undefined && only !== 'other' ? only : 'bundle: top level of a chunk of several origins';
  }
  const group = groupOfPath(origin?.path ?? url);
  if (group === 'other' && /\/dist\/(?:chunks\/)?[^/]+\.js$/.test(url)) return 'bundle: esbuild runtime helpers (unmapped)';
  return group;
}

function groupOfPath(path: string): string {
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(path);
  if (pkg !== null) return `package ${pkg[1]}`;
  const src = /\/src\/(?:([^/]+)\/)?[^/]+$/.exec(path);
  if (src !== null) return `imds-guard src/${src[1] ?? '(top: cli.ts, program.ts, errors.ts)'}`;
  return 'other';
}

/** `path:line` from the last node_modules/ or src/ in it, else from dist/. */
function place(url: string, lineNumber: number, origin: Origin | null): string {
  const where = origin === null || 'topLevelOf' in origin ? `${url}:${lineNumber + 1}` : `${origin.path}:${origin.line + 1}`;
  return where.replace(/^.*\/(node_modules|src)\//, '$1/').replace(/^.*\/dist\//, 'dist/');
}

export function summarizeProfile(p: CpuProfile, locate: Locate): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const groups: Record<string, number> = {};
  const fns = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (n === undefined) continue;
    const { url, functionName, lineNumber, columnNumber } = n.callFrame;
    const origin = url === '' ? null : locate(url, lineNumber, columnNumber);
    const g = groupOf(url, functionName, origin);
    groups[g] = (groups[g] ?? 0) + us / 1000;
    const name = functionName || (origin !== null && 'topLevelOf' in origin ? `(top level: ${g})` : '(anonymous)');
    const key = url === '' ? functionName : `${name} ${place(url, lineNumber, origin)}`;
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
