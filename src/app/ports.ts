import type { Logger } from 'pino';
import type { ConntrackPort } from '../shell/conntrack.js';
import type { DockerPort } from '../shell/docker.js';
import type { FilesPort } from '../shell/files.js';
import type { IptablesPort } from '../shell/iptables.js';

/** The adapters the verbs work through; tests pass recording fakes or the real ones. */
export interface Ports {
  readonly iptables: IptablesPort;
  readonly files: FilesPort;
  readonly conntrack: ConntrackPort;
  /** Null when Docker is switched off in the config. */
  readonly docker: DockerPort | null;
  readonly log: Logger;
}
