import type { Config } from '../core/config.js';
export async function runAgent(load: () => Promise<Config>, version: string): Promise<number> {
  void load; void version;
  throw new Error('not yet');
}
