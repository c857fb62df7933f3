import type { Logger } from 'pino';
import type { Config } from '../core/config.js';
import { createConntrack } from '../shell/conntrack.js';
import { createDocker } from '../shell/docker.js';
import { runProcess } from '../shell/exec.js';
import { files } from '../shell/files.js';
import { createCgroups } from '../shell/cgroups.js';
import type { CgroupMatchProbe } from '../shell/cgroups.js';
import { createIptables } from '../shell/iptables.js';
import { createNft } from '../shell/nft.js';
import type { Ports } from './ports.js';

/** The real adapters, for the CLI. */
export async function realPorts(config: Config, log: Logger): Promise<Ports> {
  const cgroups = createCgroups(runProcess, { lockWaitSeconds: config.lockWaitSeconds, root: config.cgroupRoot });
  const probed = new Map<string, Promise<CgroupMatchProbe>>();
  return {
    cgroups,
    capabilities: {
      cgroupMatch(family, backend) {
        const key = `${family}/${backend}`;
        let p = probed.get(key);
        if (p === undefined) {
          // Remembered once it answered; a probe that failed (lock held) is asked again next pass.
          p = cgroups.hasCgroupMatch(family, backend);
          probed.set(key, p);
          p.catch(() => probed.delete(key));
        }
        return p;
      },
    },
    iptables: createIptables(runProcess, { lockWaitSeconds: config.lockWaitSeconds }),
    nft: createNft(runProcess),
    files,
    conntrack: createConntrack(runProcess),
    docker: config.docker ? await createDocker(config.dockerHost) : null,
    log,
  };
}
