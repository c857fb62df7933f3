/**
 * Builders the core unit tests share: a configuration's desired state, saved tables as
 * iptables-save prints them (fresh, or as imds-guard leaves them), and observations.
 * Not a test file itself (the glob runs *.test.ts only).
 */
import { type Config, resolveConfig } from '../../src/core/config.js';
import { type DesiredChain, type DesiredFamily, type DesiredRule, desiredFamily } from '../../src/core/desired.js';
import { type Family, FAMILIES } from '../../src/core/family.js';
import { guardSpecOf, planPolicyOf } from '../../src/core/pass-input.js';
import type { FamilyObservation, Observation, PlanPolicy } from '../../src/core/plan.js';
import { joinArgs } from '../../src/core/rule.js';
import { type SavedTable, type TableName, parseSave, parseTable } from '../../src/core/saved-table.js';

export const config = (values: Record<string, unknown> = {}): Config => resolveConfig([{ source: 'test', values: { bootScript: 'never', ...values } }]);

/** The desired state of both families for a configuration; `output` is the filter OUTPUT chain's rules per family. */
export function desiredOf(c: Config, output: Partial<Record<Family, readonly DesiredRule[]>> = {}): Record<Family, DesiredFamily> {
  const spec = guardSpecOf(c);
  return Object.fromEntries(FAMILIES.map((f) => [f, desiredFamily(spec, f, output[f] ?? null)])) as Record<Family, DesiredFamily>;
}

export const policyOf = (c: Config): PlanPolicy => planPolicyOf(c);

export const BUILT_INS: Readonly<Record<TableName, readonly string[]>> = {
  nat: [':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]'],
  filter: [':INPUT ACCEPT [0:0]', ':FORWARD DROP [0:0]', ':OUTPUT ACCEPT [0:0]'],
  raw: [':PREROUTING ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]'],
};

/** One table section: the built-in chains, then `lines` (chain declarations and -A rules) as given. */
export const section = (table: TableName, lines: readonly string[]): string => [`*${table}`, ...BUILT_INS[table], ...lines, 'COMMIT', ''].join('\n');

export const tableOf = (table: TableName, ...lines: string[]): SavedTable => parseTable(section(table, lines), table);

/** The jump to an owned chain, as iptables-save prints it. */
export const jumpLine = (c: DesiredChain): string => `-A ${c.hook} ${joinArgs(c.jumpArgs)}`;

/** An owned chain's rules, as iptables-save prints them. */
export const ruleLines = (c: DesiredChain): string[] => c.rules.map((r) => `-A ${c.chain} ${joinArgs(r.args)}`);

/**
 * The lines of `table` as imds-guard leaves it for `want`: each chain declared, its jump
 * first in its hook, its rules. `around` adds foreign lines: before the jumps (`above`),
 * after them (`below`), and extra chain declarations.
 */
export function protectedLines(want: DesiredFamily, table: 'nat' | 'filter', around: { declare?: readonly string[]; above?: readonly string[]; below?: readonly string[] } = {}): string[] {
  const chains = want.chains.filter((c) => c.table === table);
  return [
    ...chains.map((c) => `:${c.chain} - [0:0]`),
    ...(around.declare ?? []),
    ...(around.above ?? []),
    ...chains.map(jumpLine),
    ...(around.below ?? []),
    ...chains.flatMap(ruleLines),
  ];
}

/** nat, filter and raw of one family and backend as one iptables-save prints them, protected for `want`. */
export function protectedSave(want: DesiredFamily, extra: { nat?: readonly string[]; filter?: readonly string[]; raw?: readonly string[] } = {}): ReadonlyMap<TableName, SavedTable> {
  return parseSave(
    [section('nat', [...protectedLines(want, 'nat'), ...(extra.nat ?? [])]), section('filter', [...protectedLines(want, 'filter'), ...(extra.filter ?? [])]), section('raw', extra.raw ?? [])].join(''),
  );
}

/** The tables of a host imds-guard never touched. */
export function freshSave(extra: { nat?: readonly string[]; filter?: readonly string[]; raw?: readonly string[] } = {}): ReadonlyMap<TableName, SavedTable> {
  return parseSave([section('nat', extra.nat ?? []), section('filter', extra.filter ?? []), section('raw', extra.raw ?? [])].join(''));
}

export const readable = (tables: ReadonlyMap<TableName, SavedTable>, other: FamilyObservation['other'] = null): FamilyObservation => ({ present: true, ours: { ok: true, tables }, other });

/** An nft host with Docker switched off, no boot script directory and no OpenRC, unless `over` says otherwise. */
export function observation(families: Record<Family, FamilyObservation>, over: Partial<Observation> = {}): Observation {
  return {
    backend: { backend: 'nft', reason: 'test' },
    families,
    docker: null,
    dockerReachable: null,
    bootScript: { dirExists: false, file: null },
    localServiceEnabled: null,
    ...over,
  };
}
