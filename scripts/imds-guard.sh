#!/bin/sh
# imds-guard's command (installed as dist/imds-guard; package.json's bin). It starts the
# one-shot verbs (apply, audit, remove, script, status, check-config, --help) from
# dist/cli.blob, a V8 start-up snapshot of the CLI that scripts/build.mjs builds: they
# then begin with their modules compiled and initialized instead of loading them
# (bench: engine, "CLI"). Everything else runs dist/cli.js, which does the same work,
# only slower to start:
#  - `run`, the agent: resident, so its start-up does not matter;
#  - NODE_OPTIONS set: any V8 flag makes node refuse a blob built without it;
#  - another node binary than the one that built the blob (cli.blob.node holds that
#    one's mtime and size): node refuses a blob of another version.
# Either way node is exec'd: signals and the exit status are its own.
self=$0
if [ -L "$self" ]; then self=$(readlink -f "$self"); fi
here=${self%/*}
[ "$here" = "$self" ] && here=.
node=$(command -v node) || { echo "imds-guard: node not found on PATH" >&2; exit 127; }
if [ "${1-}" != run ] && [ -z "${NODE_OPTIONS-}" ] && [ -f "$here/cli.blob" ] && read -r built < "$here/cli.blob.node" 2>/dev/null \
  && [ "$built" = "$(stat -L -c %Y:%s "$node" 2>/dev/null)" ]; then
  exec "$node" --snapshot-blob "$here/cli.blob" "$here/cli.js" "$@"
fi
exec "$node" "$here/cli.js" "$@"
