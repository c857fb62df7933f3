import './snapshot-url.js';
import { startupSnapshot } from 'node:v8';
import { pathToFileURL } from 'node:url';
import { main, prepareProgram } from './program.js';

/**
 * The one-shot verbs' start-up snapshot (dist/cli.blob, built by scripts/build.mjs with
 * `node --build-snapshot` from this file bundled as dist/snapshot.cjs; started by
 * dist/imds-guard). Building it runs this file and the imports below, then saves V8's
 * heap: the modules a verb needs arrive initialized (zod's schemas built, commander
 * loaded, the program's options declared) and their functions compiled (V8 compiles a
 * function at its first call and the snapshot keeps the code: the verbs run once below,
 * on a made-up host). `--version` from dist/cli.js spends about 55 ms over an empty node
 * loading them; from the snapshot, about 25 (deserializing it). bench: breakdown.
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

// Parsed once at build time, so that zod's compiled parsers of the config and of nft's
// JSON (zod 4 generates an object schema's parser at its first parse) are in the heap
// the snapshot saves: each verb parses its config, and apply its nft listing, without
// compiling them first. Pure calls on constants: nothing of the build machine is kept.
const warmParsers = Promise.all([import('./core/config.js'), import('./core/nft-ruleset.js')]).then(([config, nft]) => {
  config.resolveConfig([{ source: 'snapshot', values: {} }]);
  nft.parseNftRuleset(JSON.stringify({ nftables: [{ metainfo: { version: '1.0.6', json_schema_version: 1 } }, { table: { family: 'ip', name: 'nat', handle: 1 } }, { chain: { family: 'ip', table: 'nat', name: 'PREROUTING', handle: 1, type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } }] }));
});

// The verbs' functions compiled before the heap is saved: their first pass runs here,
// against a made-up host in memory (src/snapshot-warmup.ts).
const warmVerbs = warm.then(async () => (await import('./snapshot-warmup.js')).warmOneShotVerbs());

// The command line's program, with every verb's options: built here, its construction
// (about 10 ms of commander, cold) is not paid at each start. One process parses it once.
const program = prepareProgram();

startupSnapshot.setDeserializeMainFunction(() => {
  // process.argv as node gives it to dist/cli.js: [node, dist/cli.js, verb, ...].
  globalThis.imdsGuardModuleUrl = pathToFileURL(process.argv[1] ?? __filename).href;
  void Promise.all([warm, warmParsers, warmVerbs]).then(() => main(process.argv, program)).then((code) => {
    process.exitCode = code;
  });
});
