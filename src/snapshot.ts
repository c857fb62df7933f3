import './snapshot-url.js';
import { startupSnapshot } from 'node:v8';
import { pathToFileURL } from 'node:url';
import { main } from './program.js';

/**
 * The one-shot verbs' start-up snapshot (dist/cli.blob, built by scripts/build.mjs with
 * `node --build-snapshot` from this file bundled as dist/snapshot.cjs; started by
 * dist/imds-guard). Building it runs this file and the imports below, then saves V8's
 * heap: the modules a verb needs arrive compiled and initialized (zod's schemas built,
 * commander loaded). `--version` from dist/cli.js spends about 70 ms over an empty node
 * loading them; from the snapshot, about 30 (deserializing it). bench: breakdown.
 *
 * What is initialized here is frozen at build time, so only modules whose loading reads
 * nothing of the run: no environment, no terminal, no open handle (the snapshot refuses
 * those). The logger's pretty printer (it asks the terminal about colour) and dockerode
 * load when a verb needs them, as from dist/cli.js. The agent is not in the snapshot at
 * all (build.mjs puts a stub in its place): dist/imds-guard starts `run` from dist/cli.js.
 */
const warm = Promise.all([
  import('./app/settings.js'),
  import('./shell/logger.js'),
  import('./app/wiring.js'),
  import('./app/reconcile.js'),
  import('./core/findings.js'),
  import('./app/summary.js'),
  import('./app/one-writer.js'),
  import('./app/audit.js'),
  import('./core/report.js'),
  import('./app/remove.js'),
  import('./app/status.js'),
]);

startupSnapshot.setDeserializeMainFunction(() => {
  // process.argv as node gives it to dist/cli.js: [node, dist/cli.js, verb, ...].
  globalThis.imdsGuardModuleUrl = pathToFileURL(process.argv[1] ?? __filename).href;
  void warm.then(() => main(process.argv)).then((code) => {
    process.exitCode = code;
  });
});
