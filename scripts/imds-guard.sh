#!/bin/sh
# imds-guard's command (installed as dist/imds-guard; package.json's bin). It starts the
# one-shot verbs (apply, audit, remove, script, status, check-config, --help) from
# dist/cli.blob, a V8 start-up snapshot of the CLI that scripts/build.mjs builds: they
# then begin with their modules compiled and initialized instead of loading them
# (bench: engine, "CLI"). Everything else runs dist/cli.js, which does the same work,
# only slower to start:
#  - `run`, the agent: resident, so its start-up does not matter. It gets a 1 MB young
#    generation (AGENT_V8 below; V8's default 16 MB semi-spaces let its RSS grow by ~20 MB
#    during bursts of Docker events, for nothing an agent that allocates little needs;
#    bench: agent) on node's command line, not in NODE_OPTIONS, which the deployments
#    used to set and which kept every one-shot verb they run (systemd's ExecStartPre
#    apply, the image's HEALTHCHECK status) off the snapshot. A NODE_OPTIONS that sets
#    the size itself is left to decide;
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
AGENT_V8=--max-semi-space-size=1
if [ "${1-}" = run ]; then
  case " ${NODE_OPTIONS-} " in
  *" --max-semi-space-size="* | *" --max-semi-space-size "*) ;;
  *) exec "$node" "$AGENT_V8" "$here/cli.js" "$@" ;;
  esac
fi
exec "$node" "$here/cli.js" "$@"
