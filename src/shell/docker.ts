import { readFileSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type Dockerode from 'dockerode';
import { interfaceNameProblem } from '../core/names.js';

/** A Docker network as imds-guard cares about it: the host interface its containers send from. */
export interface BridgeNetwork {
  readonly id: string;
  readonly name: string;
  readonly iface: string;
}

export interface NetworkEvent {
  readonly action: string;
  readonly id: string;
  readonly name: string;
}

export interface DockerPort {
  /** Bridge networks and their host interfaces; names that are not safe interface names are left out and reported. */
  listBridges(): Promise<{ bridges: BridgeNetwork[]; rejected: { name: string; iface: string; why: string }[] }>;
  /** Subscribes to network events; `onEnd` is called once when the stream ends or fails. Returns a stop function. */
  watchNetworks(onEvent: (e: NetworkEvent) => void, onEnd: (err: Error | null) => void): Promise<() => void>;
}

const BRIDGE_NAME_OPTION = 'com.docker.network.bridge.name';

/** Docker's own naming: the default network is docker0, a user-defined one br-<12 hex of its id>. */
export function bridgeInterfaceOf(n: { Id: string; Name: string; Driver?: string | undefined; Options?: Record<string, string> | null | undefined }): string | null {
  if (n.Driver !== 'bridge') return null;
  const custom = n.Options?.[BRIDGE_NAME_OPTION];
  if (custom !== undefined && custom !== '') return custom;
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
    async listBridges() {
      const { docker } = await connect();
      const nets = await docker.listNetworks({ filters: { driver: ['bridge'] } });
      const bridges: BridgeNetwork[] = [];
      const rejected: { name: string; iface: string; why: string }[] = [];
      for (const n of nets) {
        const iface = bridgeInterfaceOf(n);
        if (iface === null) continue;
        const why = interfaceNameProblem(iface);
        if (why === null) bridges.push({ id: n.Id, name: n.Name, iface });
        else rejected.push({ name: n.Name, iface, why });
      }
      return { bridges, rejected };
    },
    async watchNetworks(onEvent, onEnd) {
      const { events } = await connect();
      const stream = (await events.getEvents({ filters: { type: ['network'] } })) as NodeJS.ReadableStream & { destroy(): void };
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
            const e = JSON.parse(line) as { Action?: string; Actor?: { ID?: string; Attributes?: Record<string, string> } };
            onEvent({ action: e.Action ?? '', id: e.Actor?.ID ?? '', name: e.Actor?.Attributes?.name ?? '' });
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
