import { type Config, type ConfigLayer, DEFAULT_CONFIG_PATH, configFromEnv, needsDmi, resolveConfig } from '../core/config.js';
import { readConfigFile } from '../shell/config-file.js';

/** Defaults < config file < environment < flags; validated once, as a whole. */
export async function loadConfig(configPath: string | undefined, flags: Record<string, unknown>, env: NodeJS.ProcessEnv): Promise<Config> {
  const path = configPath ?? env.IMDS_GUARD_CONFIG ?? DEFAULT_CONFIG_PATH;
  const required = configPath !== undefined || env.IMDS_GUARD_CONFIG !== undefined;
  const layers: ConfigLayer[] = [
    { source: `config file ${path}`, values: await readConfigFile(path, required) },
    { source: 'environment', values: configFromEnv(env) },
    { source: 'command line', values: flags },
  ];
  if (!needsDmi(layers)) return resolveConfig(layers);
  // Only `cloud: auto` without explicit endpoints reads the machine's DMI (dmiDir may be set by any layer).
  const dir = [...layers].reverse().find((l) => typeof l.values.dmiDir === 'string')?.values.dmiDir;
  const { readDmi } = await import('../shell/dmi.js');
  return resolveConfig(layers, await readDmi(typeof dir === 'string' && dir.startsWith('/') ? dir : undefined));
}
