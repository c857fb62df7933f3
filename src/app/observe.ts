import { chooseBackend } from '../core/backend-choice.js';
import type { Config } from '../core/config.js';
import type { Backend, Family } from '../core/family.js';
import { type NatTable, parseNatTable } from '../core/nat-table.js';
import { BOOT_SCRIPT_NAME } from '../core/names.js';
import { SET_NAME, parseIpsetSave } from '../core/ipset.js';
import { type Observation, type SetObservation, setWorthReading } from '../core/plan.js';
import { CommandError } from '../errors.js';
import type { Ports } from './ports.js';

/**
 * Reads the full actual state: one iptables-save per family and backend that can hold
 * rules (the legacy table is read only when /proc says it exists), Docker's bridges,
 * the boot script and OpenRC's runlevel; then, where one can matter, our ipsets.
 */
export async function observe(config: Config, ports: Ports): Promise<Observation> {
  const { iptables } = ports;
  const save = async (family: Family, backend: Backend, onlyIfLoaded: boolean): Promise<NatTable | null> => {
    if (onlyIfLoaded && backend === 'legacy' && !(await iptables.legacyNatLoaded(family))) return null;
    try {
      const text = await iptables.save(family, backend);
      return text === null ? null : parseNatTable(text);
    } catch (e) {
      // A missing variant of the other backend only means nothing of ours can be there.
      if (onlyIfLoaded && e instanceof CommandError && e.code === 'command-missing') return null;
      throw e;
    }
  };

  const override = config.backend === 'auto' ? null : config.backend;
  // nft's IPv6 table is needed whichever backend wins (ours, or the other to check for
  // leftovers), so it is read alongside IPv4: two saves in parallel on an nft host.
  // Legacy IPv6 is read alongside too when it exists, so a legacy host does not wait
  // for a second round of saves; only a table that is not loaded waits for the backend.
  const [nft4, legacy4, nft6, loadedLegacy6, dockerBridges, bootFile, bootDirExists, localServiceEnabled] = await Promise.all([
    save('ipv4', 'nft', override === 'legacy'),
    save('ipv4', 'legacy', override !== 'legacy'),
    save('ipv6', 'nft', override === 'legacy'),
    save('ipv6', 'legacy', true),
    listDockerBridges(ports),
    ports.files.read(`${config.bootScriptDir}/${BOOT_SCRIPT_NAME}`),
    ports.files.exists(config.bootScriptDir),
    localService(config, ports),
  ]);
  const backend = chooseBackend(override, nft4, legacy4);
  const legacy6 = loadedLegacy6 ?? (backend.backend === 'nft' ? null : await save('ipv6', 'legacy', false));
  const tables = {
    ipv4: backend.backend === 'nft' ? { ours: nft4, other: legacy4 } : { ours: legacy4, other: nft4 },
    ipv6: backend.backend === 'nft' ? { ours: nft6, other: legacy6 } : { ours: legacy6, other: nft6 },
  };
  const read = (f: Family): Promise<SetObservation> => (setWorthReading(config, f, tables[f].ours, dockerBridges) ? readSet(ports, f) : Promise.resolve({ available: false }));
  const [set4, set6] = await Promise.all([read('ipv4'), read('ipv6')]);
  return {
    backend,
    tables,
    dockerBridges,
    bootScript: { dirExists: bootDirExists, file: bootFile },
    localServiceEnabled,
    sets: { ipv4: set4, ipv6: set6 },
  };
}

async function readSet(ports: Ports, family: Family): Promise<SetObservation> {
  const r = await ports.ipset.save(SET_NAME[family]);
  if (!r.available) return { available: false };
  return { available: true, set: r.text === null ? null : (parseIpsetSave(r.text).get(SET_NAME[family]) ?? null) };
}

async function listDockerBridges(ports: Ports): Promise<string[] | null> {
  if (ports.docker === null) return [];
  try {
    const { bridges, rejected } = await ports.docker.listBridges();
    for (const r of rejected) ports.log.warn({ network: r.name, iface: r.iface, why: r.why }, 'docker network has a bridge name imds-guard will not put in a rule');
    return bridges.map((b) => b.iface);
  } catch (e) {
    ports.log.debug({ err: (e as Error).message }, 'docker not reachable; keeping the interfaces already protected');
    return null;
  }
}

async function localService(config: Config, ports: Ports): Promise<boolean | null> {
  if (!(await ports.files.exists(config.openrcRoot))) return null;
  return ports.files.exists(`${config.openrcRoot}/default/local`);
}
