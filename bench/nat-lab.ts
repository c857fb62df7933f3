import { countRules, dockerNat4, dockerNat6 } from './fixture.js';
import { type BenchNetns, createNetns } from './netns.js';
import { type Completed, mustSucceed } from './proc.js';

export type Backend = 'nft' | 'legacy';
export type Family = 'ipv4' | 'ipv6';
export const FAMILIES: readonly Family[] = ['ipv4', 'ipv6'];

/** `iptables-nft`, `ip6tables-legacy-save`, ...: always the backend's own binary, never the `iptables` alternative. */
export function tool(family: Family, backend: Backend, verb: '' | 'save' | 'restore'): string {
  return `${family === 'ipv4' ? 'iptables' : 'ip6tables'}-${backend}${verb === '' ? '' : `-${verb}`}`;
}

/** A namespace whose nat tables (one backend) hold Docker's rules and nothing of ours. */
export interface NatLab {
  readonly backend: Backend;
  readonly ns: BenchNetns;
  /** Foreign `-A` rules loaded per family. */
  readonly foreign: Readonly<Record<Family, number>>;
  /** A bare, timed `iptables-<backend>-save -t nat`. */
  save(family: Family): Promise<Completed>;
  /** A bare, timed `iptables-<backend>-save` of every table (what a full read costs the kernel and the tool). */
  saveFull(family: Family): Promise<Completed>;
  /** `-A` rules now in the family's nat table (optionally one chain). */
  rules(family: Family, chain?: string): Promise<number>;
  /** Back to the loaded tables: one restore per family, without --noflush (replaces the table). */
  reset(): Promise<void>;
  destroy(): void;
}

export async function openNatLab(backend: Backend, published: number): Promise<NatLab> {
  const ns = createNetns(`${backend}`);
  const base: Record<Family, string> = { ipv4: dockerNat4(published), ipv6: dockerNat6() };
  const foreign = { ipv4: countRules(base.ipv4), ipv6: countRules(base.ipv6) };
  const save = (family: Family): Promise<Completed> => ns.run(tool(family, backend, 'save'), ['-t', 'nat']);
  const saveFull = (family: Family): Promise<Completed> => ns.run(tool(family, backend, 'save'), []);
  const savedText = async (family: Family): Promise<string> => mustSucceed(`${tool(family, backend, 'save')} -t nat`, await save(family)).stdout;
  const load = async (): Promise<void> => {
    for (const family of FAMILIES) mustSucceed(`${tool(family, backend, 'restore')} (fixture)`, await ns.run(tool(family, backend, 'restore'), ['-w', '10'], { input: base[family] }));
  };
  const lab: NatLab = {
    backend,
    ns,
    foreign,
    save,
    saveFull,
    rules: async (family, chain) => countRules(await savedText(family), chain),
    reset: async () => {
      await load();
      for (const family of FAMILIES) {
        const text = await savedText(family);
        // The reset is only a reset if nothing of any strategy survived it.
        if (countRules(text) !== foreign[family] || /IMDS-GUARD|169\.254\.169\.254|fd00:ec2::254/.test(text)) {
          throw new Error(`reset of the ${family} ${backend} nat table left ${countRules(text)} rules (expected ${foreign[family]}) or a protection rule behind`);
        }
      }
    },
    destroy: () => ns.destroy(),
  };
  try {
    await lab.reset();
    const loaded = (await savedText('ipv4')).split('\n').filter((l) => l.startsWith('-A '));
    const wanted = base.ipv4.split('\n').filter((l) => l.startsWith('-A '));
    const differs = loaded.findIndex((l, i) => l !== wanted[i]);
    if (differs >= 0) process.stderr.write(`bench: note: ${backend} saves fixture rule ${differs} as "${loaded[differs]}" (loaded "${wanted[differs]}")\n`);
  } catch (e) {
    ns.destroy();
    throw e;
  }
  return lab;
}
