import type { Config } from '../core/config.js';
import { isOurBootScript } from '../core/boot-script.js';
import { BACKENDS, FAMILIES } from '../core/family.js';
import { SET_NAME } from '../core/ipset.js';
import { parseNatTable } from '../core/nat-table.js';
import { BOOT_SCRIPT_NAME } from '../core/names.js';
import { renderRemoval } from '../core/restore-payload.js';
import { CommandError } from '../errors.js';
import type { Ports } from './ports.js';

export interface RemoveResult {
  readonly restores: number;
  readonly setsDestroyed: number;
  readonly bootScriptRemoved: boolean;
}

/** Deletes exactly what imds-guard installed, in every family and backend; nothing else is named. */
export async function remove(config: Config, ports: Ports): Promise<RemoveResult> {
  let restores = 0;
  for (const family of FAMILIES) {
    for (const backend of BACKENDS) {
      if (backend === 'legacy' && !(await ports.iptables.legacyNatLoaded(family))) continue;
      let text: string | null;
      try {
        text = await ports.iptables.save(family, backend);
      } catch (e) {
        if (e instanceof CommandError && e.code === 'command-missing') continue;
        throw e;
      }
      const payload = text === null ? null : renderRemoval(parseNatTable(text));
      if (payload === null) continue;
      await ports.iptables.restore(family, backend, payload);
      ports.log.info({ family, backend }, 'removed imds-guard chain and jump');
      restores++;
    }
  }
  // Only now, with no rule naming them left in any backend, can the sets go.
  let setsDestroyed = 0;
  for (const family of FAMILIES) {
    if (await ports.ipset.destroy(SET_NAME[family])) {
      ports.log.info({ family, set: SET_NAME[family] }, 'destroyed imds-guard ipset');
      setsDestroyed++;
    }
  }
  const path = `${config.bootScriptDir}/${BOOT_SCRIPT_NAME}`;
  const file = await ports.files.read(path);
  const ours = file !== null && isOurBootScript(file.content);
  if (ours) await ports.files.remove(path);
  else if (file !== null) ports.log.warn({ path }, 'a file at the boot script path was not written by imds-guard; left in place');
  return { restores, setsDestroyed, bootScriptRemoved: ours };
}
