import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * The chunk dist/cli.js imports in place of one of src/program.ts's lazy imports: build.mjs
 * names chunks `chunks/[name]-[hash]`, and a lazily imported module's chunk takes the
 * module's name. Taken from cli.js itself, so it is the chunk this build loads.
 */
export function lazyChunk(cli: string, module: string): string {
  const name = module.slice(module.lastIndexOf('/') + 1); // src/ file names: letters and '-'
  const imports = new RegExp(`import\\("\\./(chunks/${name}-[A-Za-z0-9]+\\.js)"\\)`, 'g');
  const found = [...new Set(Array.from(readFileSync(cli, 'utf8').matchAll(imports), (m) => m[1]))];
  if (found.length !== 1 || found[0] === undefined) {
    throw new Error(`dist/cli.js imports ${found.length} chunks named ${name}-*.js, expected one (for src/${module}.ts): has scripts/build.mjs changed how it names chunks?`);
  }
  return join(cli, '..', found[0]);
}

export const chunkUrl = (cli: string, module: string): string => pathToFileURL(lazyChunk(cli, module)).href;
