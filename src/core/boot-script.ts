import { createHash } from 'node:crypto';
import { type DesiredFamily, type DesiredRule, desiredRule } from './desired.js';
import type { Backend, Family } from './family.js';
import { createLine, memberLine } from './ipset.js';
import { CHAIN } from './names.js';
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
 * The OpenRC local.d script: the same rules `apply` installs, in one restore per family.
 * Unlike the seed's `iptables -I` plus `tee -a`, running it any number of times leaves
 * one jump and one copy of each rule: the chain is declared (and so flushed) and
 * rewritten, and every existing jump is deleted by its saved text before one is
 * inserted at the top, all in one transaction. Everything in it was validated before
 * rendering, and the rules sit in quoted here-documents, so nothing is expanded.
 */
export function renderBootScript(backend: Backend, families: readonly DesiredFamily[]): string {
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
    '# $1 save command, $2 restore command; the chain rules come on stdin.',
    'ig_protect() {',
    '  save=$1 restore=$2',
    '  rules=$(cat)',
    '  current=$("$save" -t nat) || return 1',
    '  {',
    `    echo '*nat'`,
    `    echo ':${CHAIN} - [0:0]'`,
    '    printf \'%s\\n\' "$rules"',
    `    printf '%s\\n' "$current" | sed -n 's/^-A PREROUTING \\(.*-j ${CHAIN}\\)$/-D PREROUTING \\1/p'`,
    '    cat <<\'IMDS_GUARD_JUMP\'',
    '__JUMP__',
    'IMDS_GUARD_JUMP',
    `    echo 'COMMIT'`,
    '  } | "$restore" --noflush -w 5',
    '}',
    '',
    'status=0',
  ];
  let jump = '';
  for (const f of families) {
    if (f.rules.length === 0) continue;
    const tools = TOOLS[backend][f.family];
    jump = `-I PREROUTING 1 ${joinArgs(f.jumpArgs)}`;
    const protect = (indent: string, rules: readonly DesiredRule[]): string[] => [
      `${indent}ig_protect "$save" "$restore" <<'IMDS_GUARD_RULES' || { echo "imds-guard: could not protect ${f.family}" >&2; status=1; }`,
      ...rules.map((r) => `-A ${CHAIN} ${joinArgs(r.args)}`),
      'IMDS_GUARD_RULES',
    ];
    const set = f.set;
    body.push(
      '',
      `# ${f.family}: ${f.rules.length} rule(s)${set === null ? '' : `, ${set.interfaces.length} interface(s) in ipset ${set.name}`}`,
      `if save=$(ig_pick ${tools.save.join(' ')}) && restore=$(ig_pick ${tools.restore.join(' ')}); then`,
      ...(set === null
        ? protect('  ', f.rules)
        : [
            // The agent may run from an image that has ipset while this host has not:
            // without it every interface gets a rule of its own, which the agent folds
            // into the set on its first pass.
            `  if command -v ipset >/dev/null 2>&1 && ipset -exist restore <<'IMDS_GUARD_SET'`,
            createLine(f.family),
            ...set.interfaces.map((i) => memberLine(f.family, i)),
            'IMDS_GUARD_SET',
            '  then',
            ...protect('    ', f.rules),
            '  else',
            ...protect('    ', withoutSet(f)),
            '  fi',
          ]),
      'else',
      `  echo "imds-guard: no ${f.family} iptables-restore found" >&2; status=1`,
      'fi',
    );
  }
  body.push('exit $status', '');
  const text = body.join('\n').replace('__JUMP__', jump);
  const header = [
    '#!/bin/sh',
    '# imds-guard: hides the cloud metadata endpoints from Docker bridges at boot.',
    `# Written by imds-guard for the ${backend} iptables backend. Do not edit: edits are`,
    '# reported as drift and replaced by `imds-guard apply`. Safe to run any number of times.',
  ];
  return [...header, `${DIGEST_MARK}${digest(text)}`, text].join('\n');
}

/** The same protection with a rule per interface instead of the set rules. */
function withoutSet(f: DesiredFamily): DesiredRule[] {
  return f.rules.flatMap((r) => ('set' in r.via ? (f.set?.interfaces ?? []).map((i) => desiredRule(f.family, { interface: i }, r.endpoint, r.target)) : [r]));
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
