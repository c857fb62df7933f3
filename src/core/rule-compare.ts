import { type Rule, type RuleOption } from './rule.js';

// Long spellings some iptables versions print, mapped to the short ones.
const ALIASES: Readonly<Record<string, string>> = {
  '--jump': '-j',
  '--goto': '-g',
  '--in-interface': '-i',
  '--out-interface': '-o',
  '--destination': '-d',
  '--dst': '-d',
  '--source': '-s',
  '--src': '-s',
  '--protocol': '-p',
  '--match': '-m',
  '--destination-port': '--dport',
};

function normalizeOption(o: RuleOption): string {
  const name = ALIASES[o.name] ?? o.name;
  let values = o.values;
  if ((name === '-d' || name === '-s') && values[0] !== undefined && !values[0].includes('/')) {
    values = [`${values[0]}/${values[0].includes(':') ? 128 : 32}`];
  }
  return `${o.negated ? '! ' : ''}${name} ${values.join(' ')}`;
}

/** Whether two rules mean the same, whatever order or spelling iptables printed them in. */
export function sameRule(a: Rule, b: Rule): boolean {
  const x = a.options.map(normalizeOption).sort();
  const y = b.options.map(normalizeOption).sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** The same rule but for its comment: what a cgroup rule whose comment records another inode looks like. */
export function sameRuleExceptComment(a: Rule, b: Rule): boolean {
  const strip = (r: Rule): Rule => ({ ...r, options: r.options.filter((o) => o.name !== '--comment' && !(o.name === '-m' && o.values[0] === 'comment')) });
  return sameRule(strip(a), strip(b));
}
