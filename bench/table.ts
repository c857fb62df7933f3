import type { BackendResult, EngineResult, StrategyFigures } from './engine.js';
import type { ProcessCount } from './shims.js';
import type { Target } from './stats.js';

/** A plain-text table; columns whose header starts with '>' are right-aligned. */
export function renderTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const right = header.map((h) => h.startsWith('>'));
  const head = header.map((h) => h.replace(/^>/, ''));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (right[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export const ms = (x: number): string => x.toFixed(1);
export const ratio = (x: number): string => `${x.toFixed(2)}x`;

export function verdict(t: Target): string {
  return t.met ? 'target met' : 'target missed';
}

/** `6: 2 save, 2 restore, 2 conntrack`. */
export function describeProcesses(p: ProcessCount): string {
  const parts = Object.entries(p.ops).map(([op, n]) => `${n} ${op}`);
  return `${p.total}${parts.length > 0 ? `: ${parts.join(', ')}` : ''}`;
}

export function renderEngine(r: EngineResult): string {
  return [...r.backends.map(renderBackend), `(in-agent pass: ${r.inAgentPass})`].join('\n\n');
}

const kRules = (n: number): string => (n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n));

function renderBackend(b: BackendResult): string {
  const head = b.sizes.find((s) => s.published === b.headline);
  const title = `engine, ${b.backend} backend (${b.iptablesVersion}): every strategy in one loop per table size, rotating order; ratios to the bare full save of the same loop`;
  const ids = b.sizes[0]?.strategies.map((s) => s.id) ?? [];
  const header = ['strategy (converged table)', ...b.sizes.flatMap((s) => [`>${kRules(s.published)} ms`, `>x full`]), ...(head === undefined ? [] : [`>${kRules(head.published)} min..max`, '>x full, minima', '>x nat save', '>CPU ms/run']), `processes (${kRules(head?.published ?? 0)})`];
  const rows = ids.map((id) => {
    const per = b.sizes.map((s) => s.strategies.find((x) => x.id === id));
    const h = head?.strategies.find((x) => x.id === id);
    const p = b.processes[id];
    const label = (per.find((x) => x !== undefined)?.label ?? id) + readsNote(per);
    return [
      label,
      ...per.flatMap((f) => (f === undefined ? ['', ''] : [ms(f.time.run.median), ratio(f.time.ratio)])),
      ...(h === undefined ? [] : [`${ms(h.time.run.min)}..${ms(h.time.run.max)}`, ratio(h.time.ratioOfMinima), ratio(h.ratioToNatSave), ms(h.cpuMs)]),
      p === undefined ? (id.startsWith('save') ? '1' : '') : describeProcesses(p),
    ];
  });
  const sizes = b.sizes.map((s) => `${kRules(s.published)}: ${s.foreignRules.ipv4} foreign IPv4 nat rules, ${s.rounds} rounds`).join('; ');
  const targets = b.targets.map((t) => `  ${t.what}: ${t.value}; wanted ${t.target}  ${verdict(t)}`);
  return [title, `  (${sizes})`, renderTable(header, rows), ...targets].join('\n');
}

/** What the in-agent pass read in its timed runs, when not only the deciding chains. */
function readsNote(per: readonly (StrategyFigures | undefined)[]): string {
  const all = new Set(per.flatMap((f) => Object.keys(f?.reads ?? {})));
  if (all.size === 0) return '';
  return ` [reads: ${[...all].join(', ')}]`;
}

export function renderTargets(targets: readonly Target[]): string {
  return renderTable(['target', 'wanted', 'measured', 'verdict'], targets.map((t) => [t.what, t.target, t.value, verdict(t)]));
}
