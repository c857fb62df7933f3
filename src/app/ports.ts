import type { Logger } from 'pino';
import type { ConntrackPort } from '../shell/conntrack.js';
import type { DockerPort } from '../shell/docker.js';
import type { FilesPort } from '../shell/files.js';
import type { CgroupMatchProbe, CgroupPort } from '../shell/cgroups.js';
import type { IptablesPort } from '../shell/iptables.js';
import type { NftPort } from '../shell/nft.js';
import type { Backend, Family } from '../core/family.js';

/** The adapters the verbs work through; tests pass recording fakes or the real ones. */
export interface Ports {
  readonly iptables: IptablesPort;
  /** The native nftables ruleset (someone else's tables), for the bypass audit. */
  readonly nft: NftPort;
  readonly files: FilesPort;
  readonly cgroups: CgroupPort;
  /** What the kernel and iptables can do, probed once per start or reload and remembered. */
  readonly capabilities: { cgroupMatch(family: Family, backend: Backend): Promise<CgroupMatchProbe> };
  readonly conntrack: ConntrackPort;
  /** Null when Docker is switched off in the config. */
  readonly docker: DockerPort | null;
  readonly log: Logger;
}
