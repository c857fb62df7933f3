/** What Docker says about this host, after validation at the adapter (names are untrusted). */
export interface DockerNetwork {
  readonly id: string;
  readonly name: string;
  readonly driver: string;
  /** The host bridge interface of a bridge network (docker0, br-<id>, or a custom name), else null. */
  readonly bridge: string | null;
  /** The parent interface of a macvlan or ipvlan network. */
  readonly parent: string | null;
  readonly internal: boolean;
  /** Names of the containers attached to it. */
  readonly containers: readonly string[];
}

export interface DockerContainer {
  readonly id: string;
  readonly name: string;
  /** 0 when not running. */
  readonly pid: number;
  /** HostConfig.NetworkMode: bridge, host, none, container:<id>, or a network name. */
  readonly networkMode: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Names of the networks it is attached to. */
  readonly networks: readonly string[];
}

export interface DockerFacts {
  readonly networks: readonly DockerNetwork[];
  /** Running containers. */
  readonly containers: readonly DockerContainer[];
  /** `docker info`: cgroupfs or systemd, and the cgroup version, when Docker said. */
  readonly cgroupDriver: string | null;
  readonly cgroupVersion: string | null;
}
