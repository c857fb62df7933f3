import { chmodSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend, Family } from './nat-lab.js';
import { removeTempDir, tempDir } from './proc.js';

/**
 * A PATH directory of wrapper scripts, one per iptables/ip6tables/xtables binary and
 * conntrack: each logs its name, start and end time (ns, wall clock) and exit status,
 * then runs the real binary. Put first on PATH of a run kept apart from the timed ones,
 * since the wrapper's shell and `date` cost a few milliseconds per process.
 */
export interface ShimDir {
  readonly dir: string;
  /** `PATH` with the shims first. */
  readonly path: string;
  read(): ShimCall[];
  clear(): void;
  remove(): void;
}

export interface ShimCall {
  readonly name: string;
  readonly args: string;
  readonly code: number;
  /** Wall clock, ms since the epoch. */
  readonly startMs: number;
  readonly endMs: number;
  readonly kind: 'save' | 'restore' | 'rule' | 'conntrack' | 'other';
  readonly family: Family | null;
  /** null: the `iptables`/`iptables-save` alternative, whichever backend it points at. */
  readonly backend: Backend | null;
}

const BIN_DIRS = ['/usr/sbin', '/sbin', '/usr/bin', '/bin'];
const WRAPPED = /^((ip6?tables|xtables|arptables|ebtables)(-[a-z]+)*|conntrack)$/;

/** Every wrapped binary name and its real path (first directory wins, as on PATH). */
export function realBinaries(): Map<string, string> {
  const found = new Map<string, string>();
  for (const dir of BIN_DIRS) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) if (WRAPPED.test(n) && !found.has(n)) found.set(n, join(dir, n));
  }
  return found;
}

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

export function createShims(): ShimDir {
  const dir = tempDir('shims');
  const log = join(dir, 'calls.log');
  writeFileSync(log, '');
  for (const [name, real] of realBinaries()) {
    const script = [
      '#!/bin/sh',
      'start=$(date +%s%N)',
      `${quote(real)} "$@"`,
      'rc=$?',
      `printf '%s %s %s %s %s\\n' ${quote(name)} "$start" "$(date +%s%N)" "$rc" "$*" >> ${quote(log)}`,
      'exit $rc',
      '',
    ].join('\n');
    writeFileSync(join(dir, name), script);
    chmodSync(join(dir, name), 0o755);
  }
  return {
    dir,
    path: `${dir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
    read: () => readFileSync(log, 'utf8').split('\n').filter((l) => l !== '').map(parseCall),
    clear: () => writeFileSync(log, ''),
    remove: () => removeTempDir(dir),
  };
}

function parseCall(line: string): ShimCall {
  const [name = '', start = '0', end = '0', code = '0', ...rest] = line.split(' ');
  const m = /^(ip6?)tables(?:-(nft|legacy))?(?:-(save|restore))?$/.exec(name);
  const family: Family | null = m === null ? null : m[1] === 'ip6' ? 'ipv6' : 'ipv4';
  const backend = (m?.[2] ?? null) as Backend | null;
  const kind: ShimCall['kind'] = name === 'conntrack' ? 'conntrack' : m === null ? 'other' : m[3] === 'save' ? 'save' : m[3] === 'restore' ? 'restore' : 'rule';
  return { name, args: rest.join(' '), code: Number(code), startMs: Number(BigInt(start) / 1000n) / 1000, endMs: Number(BigInt(end) / 1000n) / 1000, kind, family, backend };
}

export interface FamilyCount {
  readonly saves: number;
  readonly restores: number;
  /** Single-rule iptables processes (-C, -I, -A, -D ...). */
  readonly rules: number;
}

export interface ProcessCount {
  readonly total: number;
  readonly ipv4: FamilyCount;
  readonly ipv6: FamilyCount;
  readonly conntrack: number;
  readonly other: number;
  /** Processes by what they do: save, restore, conntrack, or the rule command's operation (-C, -I, ...). */
  readonly ops: Readonly<Record<string, number>>;
  /** `name args` of every process, in the order they ended. */
  readonly calls: readonly string[];
}

export function countProcesses(calls: readonly ShimCall[]): ProcessCount {
  const fam = (f: Family): FamilyCount => {
    const of = calls.filter((c) => c.family === f);
    return { saves: of.filter((c) => c.kind === 'save').length, restores: of.filter((c) => c.kind === 'restore').length, rules: of.filter((c) => c.kind === 'rule').length };
  };
  return {
    total: calls.length,
    ipv4: fam('ipv4'),
    ipv6: fam('ipv6'),
    conntrack: calls.filter((c) => c.kind === 'conntrack').length,
    other: calls.filter((c) => c.kind === 'other').length,
    ops: tally(calls.map(operationOf)),
    calls: calls.map((c) => `${c.name} ${c.args}`.trim()),
  };
}

function operationOf(c: ShimCall): string {
  if (c.kind !== 'rule') return c.kind === 'other' ? c.name : c.kind;
  return /(?:^| )(-[ACDIRLFNXSZ]|--(?:append|check|delete|insert|replace|list))(?: |$)/.exec(c.args)?.[1] ?? 'rule';
}

function tally(xs: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}
