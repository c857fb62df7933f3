import { createHash } from 'node:crypto';
import type { DesiredFamily } from './desired.js';
import type { Backend, Family } from './family.js';
import { joinArgs } from './rule.js';

export const DIGEST_MARK = '# imds-guard-digest: sha256:';

const TOOLS: Record<Backend, Record<Family, { save: string[]; restore: string[] }>> = {
  nft: {
    ipv4: { save: ['iptables-nft-save', 'iptables-save'], restore: ['iptables-nft-restore', 'iptables-restore'] },
    ipv6: { save: ['ip6tables-nft-save', 'ip6tables-save'], restore: ['ip6tables-nft-restore', 'ip6tables-restore'] },
  },
  legacy: {
    ipv4: { save: ['iptables-legacy-save', 'iptables-save'], restore: ['iptables-legacy-restore', 'iptables-restore'] },
    ipv6: { save: ['ip6tables-legacy-save', 'ip6tables-save'], restore: ['ip6tables-legacy-restore', 'ip6tables-restore'] },
  },
};

/**
 * The OpenRC local.d script: the same chains `apply` installs, one restore per owned
 * chain and family. Unlike the seed's `iptables -I` plus `tee -a`, running it any number
 * of times leaves one jump and one copy of each rule: the chain is declared (and so
 * flushed) and rewritten, and every existing jump to it is deleted by its saved text
 * before one is inserted at the top, all in one transaction. One chain per transaction
 * so that one that cannot be restored (a cgroup not there yet) never costs the others.
 * Everything in it was validated before rendering, and the rules sit in quoted
 * here-documents, so nothing is expanded.
 */
export function renderBootScript(backend: Backend, families: readonly DesiredFamily[], cgroupParent: string | null = null): string {
  const body: string[] = [
    'set -u',
    '',
    '# Prints the first of the named commands that exists.',
    'ig_pick() {',
    '  for c in "$@"; do',
    '    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return 0; fi',
    '  done',
    '  return 1',
    '}',
    '',
    '# $1 save command, $2 restore command, $3 table, $4 hook, $5 chain; the chain\'s rules',
    '# come on stdin, then the jump (a line starting with -I).',
    'ig_restore() {',
    '  save=$1 restore=$2 table=$3 hook=$4 chain=$5',
    '  lines=$(cat)',
    '  current=$("$save" -t "$table") || return 1',
    '  {',
    '    echo "*$table"',
    '    echo ":$chain - [0:0]"',
    `    printf '%s\\n' "$lines" | grep -v '^-I '`,
    `    printf '%s\\n' "$current" | grep -e "^-A $hook .*-j $chain\\$" | sed 's/^-A /-D /'`,
    `    printf '%s\\n' "$lines" | grep '^-I '`,
    "    echo 'COMMIT'",
    '  } | "$restore" --noflush -w 5',
    '}',
    '',
    'status=0',
  ];
  if (cgroupParent !== null) {
    // The parent rule can only name a cgroup that exists, and Docker's cgroupfs driver makes
    // it with its first container: make it first, in the cgroup v2 hierarchy wherever mounted.
    body.push(
      '',
      `# Docker's container parent cgroup, for the host-network rule in filter OUTPUT.`,
      `cg_root=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)`,
      `if [ -n "$cg_root" ]; then mkdir -p "$cg_root"'${cgroupParent}' || status=1; fi`,
    );
  }
  for (const f of families) {
    if (f.chains.length === 0) continue;
    const tools = TOOLS[backend][f.family];
    body.push('', `# ${f.family}: ${f.chains.map((c) => `${c.table} ${c.chain} (${c.rules.length} rule(s))`).join(', ')}`, `if save=$(ig_pick ${tools.save.join(' ')}) && restore=$(ig_pick ${tools.restore.join(' ')}); then`);
    for (const c of f.chains) {
      body.push(
        `  ig_restore "$save" "$restore" ${c.table} ${c.hook} ${c.chain} <<'IMDS_GUARD_RULES' || { echo "imds-guard: could not restore ${f.family} ${c.table} ${c.chain}" >&2; status=1; }`,
        ...c.rules.map((r) => `-A ${c.chain} ${joinArgs(r.args)}`),
        `-I ${c.hook} 1 ${joinArgs(c.jumpArgs)}`,
        'IMDS_GUARD_RULES',
      );
    }
    body.push('else', `  echo "imds-guard: no ${f.family} iptables-restore found" >&2; status=1`, 'fi');
  }
  body.push('exit $status', '');
  const text = body.join('\n');
  const header = [
    '#!/bin/sh',
    '# imds-guard: hides the cloud metadata endpoints from every container at boot.',
    `# Written by imds-guard for the ${backend} iptables backend. Do not edit: edits are`,
    '# reported as drift and replaced by `imds-guard apply`. Safe to run any number of times.',
  ];
  return [...header, `${DIGEST_MARK}${digest(text)}`, text].join('\n');
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export type BootScriptState = 'ok' | 'missing' | 'stale' | 'edited' | 'not-executable';

export interface BootScriptFile {
  readonly content: string;
  readonly mode: number;
}

/**
 * missing: no file. edited: its content no longer matches the digest it was written
 * with (a person changed it). stale: intact, but written for another config. A file
 * that is right but not executable is skipped by OpenRC's local service.
 */
export function inspectBootScript(actual: BootScriptFile | null, expected: string): BootScriptState {
  if (actual === null) return 'missing';
  if (actual.content !== expected) {
    const lines = actual.content.split('\n');
    const at = lines.findIndex((l) => l.startsWith(DIGEST_MARK));
    if (at < 0) return 'edited';
    const claimed = lines[at]!.slice(DIGEST_MARK.length);
    return digest(lines.slice(at + 1).join('\n')) === claimed ? 'stale' : 'edited';
  }
  return (actual.mode & 0o111) === 0o111 ? 'ok' : 'not-executable';
}

/** Whether a file at the boot script's path is one we wrote (so `remove` may delete it). */
export function isOurBootScript(content: string): boolean {
  return content.split('\n').some((l) => l.startsWith(DIGEST_MARK));
}
