#!/usr/bin/env node
// Bundles src/cli.ts into dist/ with esbuild (tsc only type-checks). Why a bundle:
// - memory: the agent is resident on every host. dockerode 5 loads docker-modem's SSH
//   transport (ssh2, which compiles WebAssembly at load) and BuildKit's gRPC session at
//   import; neither can serve a host-local agent, and together they cost ~13 MB of RSS.
//   They are replaced below by stubs that fail loudly if ever reached.
// - start-up: one ESM entry and a few lazily imported chunks instead of ~350 module files.
// The code each command imports lazily (`await import(...)`) stays in its own chunk, so
// `apply` never parses the agent, nor the agent the YAML parser unless a file is given.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(repo, 'dist');

/** Modules dockerode and docker-modem load at import but imds-guard never uses, and what to say if one is reached. */
const UNUSED = {
  ssh2: 'ssh:// Docker hosts are not supported: run imds-guard on the Docker host itself',
  '@grpc/grpc-js': 'BuildKit sessions (image builds) are not part of imds-guard',
  '@grpc/proto-loader': 'BuildKit sessions (image builds) are not part of imds-guard',
  protobufjs: 'BuildKit progress (image builds) is not part of imds-guard',
};

const unusedModules = {
  name: 'unused-modules',
  setup(b) {
    const names = Object.keys(UNUSED).map((n) => n.replace(/[/@.]/g, '\\$&'));
    b.onResolve({ filter: new RegExp(`^(${names.join('|')})$`) }, (a) => ({ path: a.path, namespace: 'unused' }));
    // dockerode's BuildKit session module, required by lib/docker.js at load.
    b.onResolve({ filter: /^\.\/session$/ }, (a) =>
      /[\\/]dockerode[\\/]lib$/.test(a.resolveDir) ? { path: '@grpc/grpc-js', namespace: 'unused' } : undefined,
    );
    // Loading succeeds (docker-modem reads `require('ssh2').Client` at import); any use throws.
    b.onLoad({ filter: /.*/, namespace: 'unused' }, (a) => ({
      loader: 'js',
      contents: `const why = ${JSON.stringify(UNUSED[a.path])};
const fail = function () { throw new Error(why); };
module.exports = new Proxy(fail, { get: (_, key) => (key === '__esModule' ? false : fail) });`,
    }));
  },
};

// Built beside dist/ and swapped in, so a CLI or agent started from dist/ meanwhile
// never finds it half written, and no chunk of an older build is left behind.
const staging = `${outdir}.build-${process.pid}`;
rmSync(staging, { recursive: true, force: true });
const result = await build({
  entryPoints: { cli: join(repo, 'src', 'cli.ts') },
  outdir: staging,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Identifiers stay readable in stack traces; whitespace and syntax go (V8 keeps every
  // script's source in memory for as long as the process lives).
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  chunkNames: 'chunks/[name]-[hash]',
  // CommonJS dependencies call require() for node's built-ins.
  banner: { js: "import { createRequire as __imdsGuardRequire } from 'node:module'; const require = __imdsGuardRequire(import.meta.url);" },
  plugins: [unusedModules],
  logLevel: 'warning',
  metafile: true,
});
// `import * as z from 'zod'` lets esbuild drop what imds-guard never calls: zod's 40-odd
// locales and its JSON Schema code, 440 KB of the 580 KB that `import { z }` (a namespace
// object, used as a value) pulls into every verb's start-up (~35 ms of compiling).
const zodLocales = Object.values(result.metafile.outputs).flatMap((o) => Object.keys(o.inputs)).filter((p) => /zod[\\/]v4[\\/]locales[\\/](?!en\.js$)/.test(p));
if (zodLocales.length > 0) throw new Error(`the bundle carries zod's locales (${zodLocales.length} files): import zod as \`import * as z from 'zod'\`, not \`import { z }\``);
// The `audit --probe` child (src/shell/probe-child.ts), run once per network inside a
// container's namespace: a file of its own, CommonJS and without the banner above, so it
// loads nothing but node:net and node:fs (its start-up is most of what a probe costs).
// src/shell/probe.ts looks for it beside the module that runs it, or one level up.
/** One self-contained CommonJS script: the probe child, and the snapshot's source below. */
const script = { bundle: true, format: 'cjs', platform: 'node', target: 'node20', minifyWhitespace: true, minifySyntax: true, logLevel: 'warning' };
const child = await build({ ...script, entryPoints: [join(repo, 'src', 'shell', 'probe-child.ts')], outfile: join(staging, 'probe-child.cjs'), metafile: true });
const childImports = Object.values(child.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path));
const unexpected = childImports.filter((p) => p !== 'node:net' && p !== 'node:fs');
if (unexpected.length > 0) throw new Error(`probe-child.cjs must import only node:net and node:fs, not ${unexpected.join(', ')}`);
// The one-shot verbs' start-up snapshot (src/snapshot.ts): the CLI bundled again as one
// CommonJS script, which is what `node --build-snapshot` takes, and run by it into
// cli.blob, V8's heap with the verbs' modules compiled and initialized. A blob fits only
// the node binary (and V8 flags) that built it, so cli.blob.node names that binary by its
// mtime and size (what a package upgrade changes, and what stays the same for the same
// package on another host or in another image stage); the launcher
// (scripts/imds-guard.sh, installed as dist/imds-guard) compares them before it uses the
// blob, and starts dist/cli.js when they differ.
//
// What the blob leaves out starts faster: V8 deserializes every byte of it at each start.
// Local names are minified (the heap holds the script's source), functions and classes
// keep their `name` (error classes are named by it; `node dist/cli.js` gives readable
// stack traces), and the agent is a stub: `run` never starts from the snapshot, and the
// agent alone brings prom-client, D-Bus and the watchers (about a third of the script).
const agentOutside = {
  name: 'agent-outside-snapshot',
  setup(b) {
    b.onResolve({ filter: /^\.\/app\/agent\.js$/ }, (a) => (a.importer.endsWith(join('src', 'program.ts')) ? { path: 'agent', namespace: 'outside-snapshot' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'outside-snapshot' }, () => ({
      loader: 'ts',
      resolveDir: join(repo, 'src', 'app'),
      contents: `import { ExitCode, ImdsGuardError } from '../errors.js';
export async function runAgent(): Promise<number> {
  throw new ImdsGuardError('the agent does not start from the snapshot: run it as imds-guard run, or node dist/cli.js run', 'config-invalid', ExitCode.usage);
}`,
    }));
  },
};
await build({
  ...script,
  entryPoints: [join(repo, 'src', 'snapshot.ts')],
  outfile: join(staging, 'snapshot.cjs'),
  minifyIdentifiers: true,
  keepNames: true,
  define: { 'import.meta.url': 'globalThis.imdsGuardModuleUrl' },
  plugins: [unusedModules, agentOutside],
});
const env = { ...process.env };
delete env.NODE_OPTIONS; // the launcher uses the blob only when NODE_OPTIONS is empty: V8 flags change what fits
const snap = spawnSync(process.execPath, ['--snapshot-blob', join(staging, 'cli.blob'), '--build-snapshot', join(staging, 'snapshot.cjs')], { cwd: staging, env, encoding: 'utf8' });
if (snap.status !== 0) throw new Error(`node --build-snapshot failed (exit ${snap.status ?? snap.signal}):\n${snap.stderr}`);
rmSync(join(staging, 'snapshot.cjs'));
const nodeStat = statSync(realpathSync(process.execPath));
writeFileSync(join(staging, 'cli.blob.node'), `${Math.floor(nodeStat.mtimeMs / 1000)}:${nodeStat.size}\n`);
copyFileSync(join(repo, 'scripts', 'imds-guard.sh'), join(staging, 'imds-guard'));
chmodSync(join(staging, 'imds-guard'), 0o755);
rmSync(`${outdir}.old`, { recursive: true, force: true });
try {
  renameSync(outdir, `${outdir}.old`);
} catch (e) {
  if (e.code !== 'ENOENT') throw e;
}
renameSync(staging, outdir);
rmSync(`${outdir}.old`, { recursive: true, force: true });
if (process.argv.includes('--metafile')) process.stdout.write(`${JSON.stringify(result.metafile)}\n`);
