# imds-guard agent image, for the Swarm global service (deploy/stack.yml).
# Debian bookworm like the build stage, so iptables ships both backends
# (iptables-nft-* and iptables-legacy-*) and the agent can use whichever holds
# the host's Docker rules. scripts/agent-image assembles the same layout offline.
ARG NODE_IMAGE=node:20-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
COPY scripts/build.mjs ./scripts/build.mjs
RUN npm run build

FROM ${NODE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables conntrack util-linux \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/imds-guard
# dist/ is self-contained: scripts/build.mjs bundles the dependencies.
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/dist ./dist
# No NODE_OPTIONS: the command (dist/imds-guard) gives `run` its V8 memory setting on
# node's command line, and starts the health check's `status` from the CLI's snapshot,
# which a NODE_OPTIONS would rule out (each check: one node start every 30 s).
ENV IMDS_GUARD_STATE_DIR=/var/lib/imds-guard NODE_ENV=production
# The agent is PID 1 (the command exec's node): it installs its own SIGTERM/SIGINT/SIGHUP
# handlers (PID 1 has no default signal actions) and only ever has short-lived iptables
# children to reap.
ENTRYPOINT ["/opt/imds-guard/dist/imds-guard"]
CMD ["run"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
  CMD ["/opt/imds-guard/dist/imds-guard", "status", "--max-age", "120"]
