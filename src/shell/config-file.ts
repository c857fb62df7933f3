import { readFile } from 'node:fs/promises';
import { ConfigError } from '../errors.js';
import type { RawConfig } from '../core/config.js';

/**
 * Reads a YAML or JSON config file (YAML is a superset of JSON). A missing file is an
 * error only when the operator named it; the default path may be absent.
 */
export async function readConfigFile(path: string, required: boolean): Promise<RawConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return {};
    throw new ConfigError(`config file ${path}: cannot read it (${code ?? (e as Error).message})`);
  }
  // Loaded only when there is a file to read: most hosts run on defaults and flags.
  // Through `default` (module.exports): the bundle's lazily loaded CommonJS chunks export nothing else.
  const { parse } = (await import('yaml')).default;
  let value: unknown;
  try {
    value = parse(text, { prettyErrors: false, uniqueKeys: true });
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0] ?? '';
    throw new ConfigError(`config file ${path}: not valid YAML or JSON: ${msg}`);
  }
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`config file ${path}: must hold a mapping of settings, not ${Array.isArray(value) ? 'a list' : typeof value}`);
  return value as RawConfig;
}
