import type { Config } from '../core/config.js';
import { isOurBootScript } from '../core/boot-script.js';
import { BACKENDS, FAMILIES } from '../core/family.js';
import { BOOT_SCRIPT_NAME } from '../core/names.js';
import { renderRemoval } from '../core/restore-payload.js';
import { parseSave } from '../core/saved-table.js';
import { CommandError } from '../errors.js';
import type { Ports } from './ports.js';

export interface RemoveResult {
  readonly restores: number;
  readonly bootScriptRemoved: boolean;
}

/** Deletes exactly what imds-guard installed, in every family, backend and table; nothing else is named. */
export async function remove(config: Config, ports: Ports): Promise<RemoveResult> {
  let restores = 0;
  for (const family of FAMILIES) {
    for (const backend of BACKENDS) {
      if (backend === 'legacy' && !(await ports.iptables.legacyLoaded(family))) continue;
      let text: string | null;
      try {
        text = await ports.iptables.save(family, backend);
      } catch (e) {
        if (e instanceof CommandError && e.code === 'command-missing') continue;
        throw e;
      }
      if (text === null) continue;
      for (const table of parseSave(text).values()) {
        const payload = renderRemoval(table);
        if (payload === null) continue;
        await ports.iptables.restore(family, backend, payload);
        ports.log.info({ family, backend, table: table.name }, 'removed imds-guard chains and jumps');
        restores++;
      }
    }
  }
  const path = `${config.bootScriptDir}/${BOOT_SCRIPT_NAME}`;
  const file = await ports.files.read(path);
  const ours = file !== null && isOurBootScript(file.content);
  if (ours) await ports.files.remove(path);
  else if (file !== null) ports.log.warn({ path }, 'a file at the boot script path was not written by imds-guard; left in place');
  return { restores, bootScriptRemoved: ours };
}
