import type { BackendResult, EngineResult } from './engine.js';
import { FAMILIES, tool } from './nat-lab.js';
import type { ProcessCount } from './shims.js';
import type { Paired, Target } from './stats.js';

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
const spread = (p: Paired): string => `${ms(p.run.min)}..${ms(p.run.max)}`;

export function verdict(t: Target): string {
  return t.met ? 'target met' : 'target missed';
}

/** `6: 2 save, 2 restore, 2 conntrack`. */
export function describeProcesses(p: ProcessCount): string {
  const parts = Object.entries(p.ops).map(([op, n]) => `${n} ${op}`);
  return `${p.total}${parts.length > 0 ? `: ${parts.join(', ')}` : ''}`;
}

export function renderEngine(r: EngineResult): string {
  return r.backends.map(renderBackend).join('\n\n');
}

function renderBackend(b: BackendResult): string {
  const target = (id: string): Target | undefined => b.targets.find((t) => t.id === id);
  const title = `engine, ${b.backend} backend (${b.iptablesVersion}): nat table with ${b.foreignRules.ipv4} foreign IPv4 rules, ${b.foreignRules.ipv6} IPv6; medians of ${b.baseline.samples.length} interleaved runs`;

  const timing = renderTable(
    ['measurement', '>median ms', '>min..max', '>ratio', '>ratio of minima', 'target (on the median ratio)'],
    [
      [`bare ${tool('ipv4', b.backend, 'save')} -t nat (IPv4) = baseline`, ms(b.baseline.median), `${ms(b.baseline.min)}..${ms(b.baseline.max)}`, ratio(1), ratio(1), ''],
      ['IPv4 + IPv6 saves started together (reference)', ms(b.bothFamiliesParallel.run.median), spread(b.bothFamiliesParallel), ratio(b.bothFamiliesParallel.ratio), ratio(b.bothFamiliesParallel.ratioOfMinima), ''],
      ...b.noop.map((l, i) => {
        const t = target(`${b.backend}.noop-ratio.${i + 1}`);
        return [l.label, ms(l.timing.run.median), spread(l.timing), ratio(l.timing.ratio), ratio(l.timing.ratioOfMinima), t === undefined ? '' : `${t.target}  ${verdict(t)}`];
      }),
    ],
  );

  const procs = renderTable(
    ['processes of one no-op apply (PATH shims)', ...FAMILIES.flatMap((f) => [`>${f} saves`, `>${f} restores`]), '>other', 'target'],
    b.noop.map((l, i) => {
      const t = target(`${b.backend}.noop-processes.${i + 1}`);
      const other = l.processes.total - FAMILIES.reduce((n, f) => n + l.processes[f].saves + l.processes[f].restores, 0);
      return [l.label.replace(/^no-op apply /, ''), ...FAMILIES.flatMap((f) => [String(l.processes[f].saves), String(l.processes[f].restores)]), String(other), t === undefined ? '' : `${t.target}  ${verdict(t)}`];
    }),
  );
  const saveNames = b.noop[0]?.processes.calls.filter((c) => /-save /.test(c)).map((c) => c.split(' ')[0]) ?? [];

  const side = renderTable(
    ['strategy', '>unprotected ms', '>ratio', '>converged ms', '>ratio', 'processes unprotected', 'processes converged', '>PREROUTING after 3 runs v4/v6', '>rules added v4/v6'],
    b.sideBySide.map((s) => [
      s.label,
      ms(s.unprotected.run.median),
      ratio(s.unprotected.ratio),
      ms(s.converged.run.median),
      ratio(s.converged.ratio),
      describeProcesses(s.processes.unprotected),
      describeProcesses(s.processes.converged),
      `${s.afterThreeRuns.ipv4.prerouting}/${s.afterThreeRuns.ipv6.prerouting}`,
      `${s.afterThreeRuns.ipv4.added}/${s.afterThreeRuns.ipv6.added}`,
    ]),
  );
  const idem = target(`${b.backend}.idempotent`);
  return [
    title,
    timing,
    '',
    procs,
    `  (saves run: ${saveNames.join(', ') || 'none'})`,
    '',
    `side by side on the same table (ratios to the bare save sampled in the same loop; Docker's PREROUTING has ${b.foreignPrerouting.ipv4}/${b.foreignPrerouting.ipv6} rules)`,
    side,
    idem === undefined ? '' : `${idem.what}: ${idem.value}; ${idem.target}  ${verdict(idem)}`,
  ].join('\n');
}

export function renderTargets(targets: readonly Target[]): string {
  return renderTable(['target', 'wanted', 'measured', 'verdict'], targets.map((t) => [t.what, t.target, t.value, verdict(t)]));
}
