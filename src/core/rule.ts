/**
 * A rule as iptables-save prints it, split into options. Parsing into options (rather
 * than comparing lines) keeps us correct across iptables versions that print the same
 * rule slightly differently.
 */
export interface RuleOption {
  readonly negated: boolean;
  readonly name: string;
  readonly values: readonly string[];
}

export interface Rule {
  readonly chain: string;
  /** The rule's arguments after `-A CHAIN`, exactly as printed. */
  readonly args: readonly string[];
  readonly options: readonly RuleOption[];
}

/** Splits an iptables-save rule line into arguments, honouring its double quotes and backslash escapes. */
export function splitArgs(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inToken = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inToken = true;
    } else if (c === '"') {
      quoted = !quoted;
      inToken = true;
    } else if (!quoted && (c === ' ' || c === '\t')) {
      if (inToken) out.push(cur);
      cur = '';
      inToken = false;
    } else {
      cur += c;
      inToken = true;
    }
  }
  if (inToken) out.push(cur);
  return out;
}

/** Renders arguments the way iptables-save does, so a rendered rule reads like a saved one. */
export function joinArgs(args: readonly string[]): string {
  return args.map((a) => (a === '' || /[\s"\\]/.test(a) ? `"${a.replace(/(["\\])/g, '\\$1')}"` : a)).join(' ');
}

/** A parsed rule as iptables-save prints it: `-A CHAIN ARGS`. */
export const savedLine = (r: Rule): string => `-A ${r.chain} ${joinArgs(r.args)}`;

export function parseRuleArgs(chain: string, args: readonly string[]): Rule {
  const options: RuleOption[] = [];
  let negated = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '!') {
      negated = true;
      continue;
    }
    if (!a.startsWith('-')) continue; // a stray value; attached below
    const values: string[] = [];
    while (i + 1 < args.length && !args[i + 1]!.startsWith('-') && args[i + 1] !== '!') values.push(args[++i]!);
    options.push({ negated, name: a, values });
    negated = false;
  }
  return { chain, args, options };
}

export function option(rule: Rule, ...names: string[]): RuleOption | undefined {
  return rule.options.find((o) => names.includes(o.name));
}

export function optionValue(rule: Rule, ...names: string[]): string | undefined {
  return option(rule, ...names)?.values[0];
}

/** `-j` or `-g` target. */
export function ruleTarget(rule: Rule): string | undefined {
  return optionValue(rule, '-j', '--jump', '-g', '--goto');
}

export function ruleComment(rule: Rule): string | undefined {
  return optionValue(rule, '--comment');
}

export function modules(rule: Rule): string[] {
  return rule.options.filter((o) => o.name === '-m' || o.name === '--match').map((o) => o.values[0] ?? '');
}
