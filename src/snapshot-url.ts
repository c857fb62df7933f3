import { pathToFileURL } from 'node:url';

/**
 * The start-up snapshot's stand-in for `import.meta.url` (scripts/build.mjs defines one as
 * the other in dist/snapshot.cjs, which is CommonJS). Imported first, so the modules the
 * snapshot initializes while it is built (src/program.ts reads ../package.json) resolve
 * their files from the build's own directory; src/snapshot.ts points it at dist/cli.js,
 * the launcher's second argument, when the snapshot starts.
 */
declare global {
  // eslint-disable-next-line no-var
  var imdsGuardModuleUrl: string;
}
globalThis.imdsGuardModuleUrl = pathToFileURL(__filename).href;
