import { readFileSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type Dockerode from 'dockerode';
import type { DockerContainer, DockerFacts, DockerNetwork } from '../core/docker-facts.js';

export interface NetworkEvent {
  /** network or container. */
  readonly type: string;
  readonly action: string;
  readonly id: string;
  readonly name: string;
}

export interface ContainerState {
  /** The pid of its init process in dockerd's pid namespace; 0 when not running. */
  readonly pid: number;
  /** HostConfig.CgroupParent (`docker run --cgroup-parent`): empty when it has none of its own. Untrusted. */
  readonly cgroupParent: string;
}

export interface DockerPort {
  /** Networks (with the containers on them), running containers and the cgroup driver; names are made safe to print. */
  facts(opts?: { withInfo?: boolean }): Promise<DockerFacts>;
  /** A container's init process (pid 0 when not running) and its own cgroup parent. */
  containerState(id: string): Promise<ContainerState>;
  /** Subscribes to network and container events; `onEnd` is called once when the stream ends or fails. Returns a stop function. */
  watchNetworks(onEvent: (e: NetworkEvent) => void, onEnd: (err: Error | null) => void): Promise<() => void>;
}

/** Text from Docker made safe to print in a report or log line (names are untrusted). */
export function printable(text: unknown, max = 128): string {
  const s = typeof text === 'string' ? text : '';
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, max);
}

const BRIDGE_NAME_OPTION = 'com.docker.network.bridge.name';

/** Docker's own naming: the default network is docker0, a user-defined one br-<12 hex of its id>. */
export function bridgeNameOf(n: { Id: string; Name: string; Driver?: string | undefined; Options?: Record<string, string> | null | undefined }): string | null {
  if (n.Driver !== 'bridge') return null;
  const custom = n.Options?.[BRIDGE_NAME_OPTION];
  if (custom !== undefined && custom !== '') return printable(custom, 32);
  return n.Name === 'bridge' ? 'docker0' : `br-${n.Id.slice(0, 12)}`;
}

function modemOptions(host: string | null): Dockerode.DockerOptions | undefined {
  if (host === null) return undefined; // docker-modem reads DOCKER_HOST and the TLS variables itself
  const url = new URL(host);
  if (url.protocol === 'unix:') return { socketPath: url.pathname };
  const certPath = process.env.DOCKER_CERT_PATH;
  const tls = process.env.DOCKER_TLS_VERIFY === '1' && certPath !== undefined;
  return {
    // An IPv6 literal keeps its brackets in URL.hostname; the socket layer wants it bare.
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: Number(url.port || (tls ? 2376 : 2375)),
    protocol: tls || url.protocol === 'https:' ? 'https' : 'http',
    ...(tls ? { ca: readFileSync(join(certPath, 'ca.pem')), cert: readFileSync(join(certPath, 'cert.pem')), key: readFileSync(join(certPath, 'key.pem')) } : {}),
  };
}

export async function createDocker(host: string | null, timeoutMs = 5000): Promise<DockerPort> {
  const options = modemOptions(host);
  const socketPath = options?.socketPath ?? (host === null && process.env.DOCKER_HOST === undefined ? '/var/run/docker.sock' : undefined);
  let clients: { docker: Dockerode; events: Dockerode } | null = null;
  const connect = async (): Promise<{ docker: Dockerode; events: Dockerode }> => {
    // No socket, no Docker: say so without loading dockerode, the heaviest module we have.
    if (socketPath !== undefined) await access(socketPath);
    if (clients === null) {
      const { default: Docker } = await import('dockerode');
      // The event stream is long-lived, so its client has no request timeout.
      clients = { docker: new Docker({ ...options, timeout: timeoutMs }), events: new Docker({ ...options }) };
    }
    return clients;
  };
  return {
    async facts(opts = {}) {
      const { docker } = await connect();
      const [nets, running, info] = await Promise.all([
        docker.listNetworks(),
        docker.listContainers(),
        opts.withInfo === true ? (docker.info() as Promise<{ CgroupDriver?: string; CgroupVersion?: string }>) : Promise.resolve(null),
      ]);
      const onNetwork = new Map<string, string[]>();
      const containers: DockerContainer[] = running.map((c) => {
        const name = printable((c.Names?.[0] ?? c.Id).replace(/^\//, ''));
        const attached = Object.keys(c.NetworkSettings?.Networks ?? {}).map((n) => printable(n));
        for (const n of Object.values(c.NetworkSettings?.Networks ?? {})) {
          const list = onNetwork.get(n.NetworkID) ?? [];
          list.push(name);
          onNetwork.set(n.NetworkID, list);
        }
        const labels: Record<string, string> = {};
        for (const [k, v] of Object.entries(c.Labels ?? {})) labels[printable(k, 256)] = printable(v, 256);
        return { id: /^[0-9a-f]{64}$/.test(c.Id) ? c.Id : printable(c.Id), name, pid: 0, networkMode: printable(c.HostConfig?.NetworkMode ?? ''), labels, networks: attached.sort() };
      });
      const networks: DockerNetwork[] = nets.map((n) => ({
        id: printable(n.Id),
        name: printable(n.Name),
        driver: printable(n.Driver ?? ''),
        bridge: bridgeNameOf(n),
        parent: n.Options?.parent === undefined ? null : printable(n.Options.parent),
        internal: n.Internal === true,
        containers: (onNetwork.get(n.Id) ?? []).sort(),
      }));
      return { networks, containers, cgroupDriver: info === null ? null : printable(info.CgroupDriver ?? '') || null, cgroupVersion: info === null ? null : printable(info.CgroupVersion ?? '') || null };
    },
    async containerState(id) {
      const { docker } = await connect();
      const c = (await docker.getContainer(id).inspect()) as { State?: { Pid?: number }; HostConfig?: { CgroupParent?: string } };
      const pid = c.State?.Pid ?? 0;
      return { pid: Number.isInteger(pid) && pid > 0 ? pid : 0, cgroupParent: printable(c.HostConfig?.CgroupParent ?? '', 1024) };
    },
    async watchNetworks(onEvent, onEnd) {
      const { events } = await connect();
      const stream = (await events.getEvents({ filters: { type: ['network', 'container'] } })) as NodeJS.ReadableStream & { destroy(): void };
      let buffered = '';
      let ended = false;
      const end = (err: Error | null): void => {
        if (ended) return;
        ended = true;
        onEnd(err);
      };
      stream.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line === '') continue;
          try {
            const e = JSON.parse(line) as { Type?: string; Action?: string; Actor?: { ID?: string; Attributes?: Record<string, string> } };
            onEvent({ type: printable(e.Type), action: printable(e.Action), id: printable(e.Actor?.ID), name: printable(e.Actor?.Attributes?.name) });
          } catch {
            // A partial or foreign line: the next full reconcile does not depend on it.
          }
        }
      });
      stream.on('error', (err: Error) => end(err));
      stream.on('end', () => end(null));
      stream.on('close', () => end(null));
      return () => {
        ended = true;
        stream.destroy();
      };
    },
  };
}
