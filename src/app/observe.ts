import { chooseBackend } from '../core/backend-choice.js';
import type { Config } from '../core/config.js';
import type { DockerFacts } from '../core/docker-facts.js';
import type { Backend, Family } from '../core/family.js';
import { type CheapRead, DECIDING, WHOLE_BY_DEFAULT, type WholeTables, chainsOfTableListing } from '../core/deciding-reads.js';
import { BOOT_SCRIPT_NAME } from '../core/names.js';
import { type NativeNftRead, isPlainNftName, tablesToRead } from '../core/nft-bypass.js';
import { type NftRuleset, joinRulesets, parseNftListing, parseNftRuleset, tablePart } from '../core/nft-ruleset.js';
import type { FamilyObservation, Observation, TableRead } from '../core/plan.js';
import { type SavedTable, type TableName, emptyTable, parseListing, parseSave } from '../core/saved-table.js';
import { CommandError, describeError } from '../errors.js';
import type { Ports } from './ports.js';

/** Every table of one family and backend, in one save; what could not be read is said. */
async function saveOf(ports: Ports, family: Family, backend: Backend): Promise<TableRead> {
  try {
    const text = await ports.iptables.save(family, backend);
    return text === null ? { ok: false, why: `${family} tables are not available` } : { ok: true, tables: parseSave(text) };
  } catch (e) {
    return { ok: false, why: describeError(e) };
  }
}

/**
 * Reads the actual state once: one iptables-save per family and backend that can hold
 * rules (all tables in one process; the legacy tables only when /proc says they exist),
 * what Docker says, the boot script and OpenRC's runlevel, and the native nftables tables
 * (readNativeNft).
 */
export async function observe(config: Config, ports: Ports): Promise<Observation> {
  const { iptables } = ports;
  /** The other backend: absent (not loaded, or its tool missing) means nothing of ours can be there. */
  const readIfLoaded = async (family: Family, backend: Backend): Promise<ReadonlyMap<TableName, SavedTable> | null> => {
    if (backend === 'legacy' && !(await iptables.legacyLoaded(family))) return null;
    try {
      const text = await iptables.save(family, backend);
      return text === null ? null : parseSave(text);
    } catch (e) {
      if (e instanceof CommandError && e.code === 'command-missing') return null;
      throw e;
    }
  };
  const override = config.backend === 'auto' ? null : config.backend;
  // The saves are spawned first and the native listing after them (setImmediate: after
  // the microtasks that spawn the saves): each spawn holds node for a few ms, and the
  // save of a table with thousands of rules is what the pass waits for.
  const native = new Promise<void>((resolve) => setImmediate(resolve)).then(() => readNativeNft(ports));
  // Where legacy holds the rules, iptables-nft usually has no table at all, and the native
  // listing (read anyway) says so: its saves are then not run (two processes fewer for a
  // one-shot apply under legacy; bench: engine). Where it may hold the rules, they are
  // read at once, not after the listing.
  const legacyAny = Promise.all([iptables.legacyLoaded('ipv4'), iptables.legacyLoaded('ipv6')]).then(([a, b]) => a || b);
  const nftSave = async (family: Family): Promise<TableRead> => {
    if (override !== 'nft' && (await legacyAny)) {
      const n = await native;
      if (n.ok && !n.ruleset.xtables.includes(family === 'ipv4' ? 'ip' : 'ip6')) return { ok: true, tables: new Map() };
    }
    return saveOf(ports, family, 'nft');
  };
  const [nft4, legacy4, nft6, legacy6, present6, docker, bootFile, bootDirExists, localServiceEnabled, nft] = await Promise.all([
    nftSave('ipv4'),
    readIfLoaded('ipv4', 'legacy').catch(() => null),
    nftSave('ipv6'),
    readIfLoaded('ipv6', 'legacy').catch(() => null),
    iptables.familyPresent('ipv6'),
    dockerFacts(config, ports),
    ports.files.read(`${config.bootScriptDir}/${BOOT_SCRIPT_NAME}`),
    ports.files.exists(config.bootScriptDir),
    localService(config, ports),
    native,
  ]);
  const natOf = (r: TableRead): SavedTable | null => (r.ok ? (r.tables.get('nat') ?? emptyTable('nat')) : null);
  const backend = chooseBackend(override, natOf(nft4), legacy4?.get('nat') ?? null);
  const legacyRead = async (family: Family, loaded: ReadonlyMap<TableName, SavedTable> | null): Promise<TableRead> =>
    loaded !== null ? { ok: true, tables: loaded } : (await iptables.legacyLoaded(family)) ? saveOf(ports, family, 'legacy') : { ok: true, tables: new Map() };
  const family = async (f: Family, present: boolean, nft: TableRead, legacy: ReadonlyMap<TableName, SavedTable> | null): Promise<FamilyObservation> =>
    backend.backend === 'nft'
      ? { present, ours: nft, other: legacy }
      : { present, ours: await legacyRead(f, legacy), other: nft.ok ? nft.tables : null };
  const [ipv4, ipv6] = await Promise.all([family('ipv4', true, nft4, legacy4), family('ipv6', present6, nft6, legacy6)]);
  return { backend, families: { ipv4, ipv6 }, docker: docker.facts, dockerReachable: docker.reachable, bootScript: { dirExists: bootDirExists, file: bootFile }, localServiceEnabled, nft };
}

/**
 * The native nftables tables, whatever the backend (a chain of any nf_tables table hooked
 * before dstnat runs before legacy iptables' nat too): `nft -j list chains` (a few ms: no
 * rules), then, only for a table with a base chain that could get around our nat rule
 * (usually none; firewalld's is one), that table's rules (JSON to judge, text for
 * evidence). A table whose name nft would not read as one word is read with the whole
 * ruleset instead. Never throws: what could not be read is said in the result; a table
 * that went between the two reads is read again once.
 */
export async function readNativeNft(ports: Ports): Promise<NativeNftRead> {
  try {
    return await nativeOnce(ports);
  } catch {
    try {
      return await nativeOnce(ports);
    } catch (e) {
      return { ok: false, missing: e instanceof CommandError && e.code === 'command-missing', why: describeError(e) };
    }
  }
}

async function nativeOnce(ports: Ports): Promise<NativeNftRead> {
  const parsed = (text: string): NftRuleset => {
    const r = parseNftRuleset(text);
    if (typeof r === 'string') throw new Error(r);
    return r;
  };
  const chains = parsed(await ports.nft.chains());
  const tables = tablesToRead(chains.chains);
  if (tables.length === 0) return { ok: true, ruleset: chains, listing: new Map() };
  // Where iptables-nft has tables is known from the chain list, whatever tables are read after it.
  const { xtables } = chains;
  if (!tables.every((t) => isPlainNftName(t.name))) {
    const [json, text] = await Promise.all([ports.nft.rulesetJson(), ports.nft.rulesetText()]);
    const all = parsed(json);
    return { ok: true, ruleset: { ...joinRulesets(tables.map((t) => tablePart(all, t.family, t.name))), xtables }, listing: parseNftListing(text) };
  }
  const parts = await Promise.all(
    tables.map(async (t) => {
      const [json, text] = await Promise.all([ports.nft.tableJson(t.family, t.name), ports.nft.tableText(t.family, t.name)]);
      return { ruleset: tablePart(parsed(json), t.family, t.name), listing: parseNftListing(text) };
    }),
  );
  return { ok: true, ruleset: { ...joinRulesets(parts.map((p) => p.ruleset)), xtables }, listing: new Map(parts.flatMap((p) => [...p.listing])) };
}

async function dockerFacts(config: Config, ports: Ports): Promise<{ facts: DockerFacts | null; reachable: boolean | null }> {
  if (ports.docker === null) return { facts: null, reachable: null };
  try {
    return { facts: await ports.docker.facts({ withInfo: config.hostNetwork }), reachable: true };
  } catch (e) {
    ports.log.debug({ err: describeError(e) }, 'docker not reachable; the protection does not depend on it');
    return { facts: null, reachable: false };
  }
}

async function localService(config: Config, ports: Ports): Promise<boolean | null> {
  if (!(await ports.files.exists(config.openrcRoot))) return null;
  return ports.files.exists(`${config.openrcRoot}/default/local`);
}

/** The chains that decide whether a converged host is still protected: the hooks we jump from, and our own. */

/**
 * The cheap read of a converged agent: per family, only the deciding chains of the
 * backend the last full read chose (`iptables -S CHAIN`, which under nft costs a fraction
 * of a full save on a table with thousands of foreign rules), and not the other backend
 * (read by every full pass: at start and every few minutes). A pass over it may only conclude "still converged"; anything else is decided
 * by a full read (see reconcile). The native nftables tables are read only with `native`
 * (a one-shot apply, which must not call a host protected that audit fails); the agent
 * reads them in its full reads, and a change in a native table wakes one (netfilter-watch).
 */
export async function observeDeciding(config: Config, ports: Ports, read: CheapRead & { readonly native?: boolean }): Promise<Observation> {
  const { iptables } = ports;
  const { backend } = read;
  const whole: WholeTables = read.whole ?? WHOLE_BY_DEFAULT;
  const family = async (f: Family, present: boolean): Promise<FamilyObservation> => {
    if (!present) return { present, ours: { ok: false, why: `no ${f}` }, other: null };
    // Every table of the family, as a full read sees them; a save that fails is a family
    // not read, which the pass reports, and so escalates to a full read.
    if (read.saved?.includes(f) === true) return { present, ours: await saveOf(ports, f, backend), other: null };
    const tables = new Map<TableName, SavedTable>();
    await Promise.all(
      DECIDING.map(async ({ table, chains }) => {
        if (whole[f].includes(table)) {
          const [text] = await iptables.listChains(f, backend, table, [null]);
          tables.set(table, parseListing(table, text === null || text === undefined ? chains.map((c) => [c, null] as const) : chainsOfTableListing(text, chains)));
          return;
        }
        const texts = await iptables.listChains(f, backend, table, chains);
        tables.set(table, parseListing(table, chains.map((c, i) => [c, texts[i] ?? null] as const)));
      }),
    );
    return { present, ours: { ok: true, tables }, other: null };
  };
  // Every read at once: the listings do not wait for Docker, nor nft for the listings.
  const [ipv4, ipv6, docker, bootFile, bootDirExists, localServiceEnabled, nft] = await Promise.all([
    family('ipv4', true),
    iptables.familyPresent('ipv6').then((present6) => family('ipv6', present6)),
    dockerFacts(config, ports),
    ports.files.read(`${config.bootScriptDir}/${BOOT_SCRIPT_NAME}`),
    ports.files.exists(config.bootScriptDir),
    localService(config, ports),
    read.native === true ? readNativeNft(ports) : undefined,
  ]);
  return { backend: { backend, reason: `${backend}, as the last full read found` }, families: { ipv4, ipv6 }, docker: docker.facts, dockerReachable: docker.reachable, bootScript: { dirExists: bootDirExists, file: bootFile }, localServiceEnabled, ...(nft === undefined ? {} : { nft }) };
}
