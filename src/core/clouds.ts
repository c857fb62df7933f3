import { DEFAULT_ENDPOINTS } from './endpoint.js';

/**
 * The clouds imds-guard has endpoint presets for. A tuple, so config can hand it to
 * `z.enum(CLOUDS)` and the type and the list cannot drift apart.
 */
export const CLOUDS = ['aws', 'gcp', 'azure', 'oci', 'openstack', 'alibaba', 'tencent', 'digitalocean'] as const;
export type Cloud = (typeof CLOUDS)[number];
export type CloudChoice = Cloud | 'auto';

export function isCloud(text: string): text is Cloud {
  return (CLOUDS as readonly string[]).includes(text);
}

/** The endpoints one cloud's instances can reach, in the `ADDRESS[:PORT]` syntax of `parseEndpoint` (TCP). */
export interface CloudPreset {
  readonly cloud: Cloud;
  readonly endpoints: readonly string[];
  /** What the list covers and what it leaves out on purpose, for the audit and the README. */
  readonly notes: string;
}

/*
 * Every preset keeps 169.254.169.254:80, even where the cloud does not document it (Alibaba,
 * Tencent): a wrong detection must never leave open the address nearly every cloud uses, and
 * a REDIRECT to an address nothing answers on costs nothing. Ports are listed one by one and
 * never as "all ports": GCE and Azure serve DNS on the same addresses (169.254.169.254:53,
 * 168.63.129.16:53) and containers query it directly (Docker copies the host's resolv.conf).
 */
const PRESETS: { readonly [C in Cloud]: CloudPreset } = {
  // https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html
  // ("IPv4 http://169.254.169.254/latest/meta-data/, IPv6 http://[fd00:ec2::254]/latest/meta-data/";
  // IPv6 only on Nitro instances in an IPv6 subnet). Same as DEFAULT_ENDPOINTS on purpose.
  aws: {
    cloud: 'aws',
    endpoints: ['169.254.169.254:80', '[fd00:ec2::254]:80'],
    notes: 'EC2 IMDS over IPv4 and over IPv6 (the IPv6 address answers on Nitro instances in IPv6 subnets only).',
  },
  // 169.254.169.254:80: https://cloud.google.com/compute/docs/ip-addresses/configure-ipv6-address
  //   ("VMs can connect to the metadata server ... using the IP address 169.254.169.254") and
  //   https://cloud.google.com/compute/docs/storing-retrieving-metadata (http://metadata.google.internal/computeMetadata/v1/).
  // :8080: no Google doc page found. Google's gRPC ALTS handshaker is "metadata.google.internal.:8080"
  //   (grpc/grpc src/core/credentials/transport/alts/alts_credentials.cc, grpc-java HandshakerServiceChannel),
  //   and GKE's metadata concealment proxied both ports (kubernetes/kubernetes
  //   cluster/gce/gci/configure-helper.sh: PREROUTING -d 169.254.169.254 --dport 80 and --dport 8080).
  // :443: the mTLS metadata server, https://169.254.169.254 (GoogleCloudPlatform/google-guest-agent
  //   cmd/core_plugin/agentcrypto/mtls_mds.go). It wants a client key only root on the host holds; blocked anyway.
  // fd20:ce::254: NOT found in Google's documentation by search; it is the GCE IPv6 metadata address in
  //   every independent metadata denylist we found. A ULA no container needs, so ports 80 and 8080 are
  //   blocked there too without verification.
  gcp: {
    cloud: 'gcp',
    endpoints: ['169.254.169.254:80', '169.254.169.254:8080', '169.254.169.254:443', '[fd20:ce::254]:80', '[fd20:ce::254]:8080'],
    notes:
      'Compute Engine metadata server on 80, the ALTS handshaker on 8080 (a container using ALTS or DirectPath acts as the VM), ' +
      'the mTLS metadata server on 443, and the IPv6 address fd20:ce::254 (not in Google\'s docs; ports assumed). ' +
      'Port 53 on 169.254.169.254 is the VM\'s DNS server and stays open.',
  },
  // IMDS: https://learn.microsoft.com/en-us/azure/virtual-machines/instance-metadata-service
  //   ("a well-known, non-routable IP address (169.254.169.254)"; no IPv6 address is documented).
  // WireServer: https://learn.microsoft.com/en-us/azure/virtual-network/what-is-ip-address-168-63-129-16
  //   ("The VM Agent requires outbound communication over ports 80/tcp and 32526/tcp with WireServer").
  //   The Azure agent restricts it to root in OUTPUT, which forwarded container traffic never passes.
  azure: {
    cloud: 'azure',
    endpoints: ['169.254.169.254:80', '168.63.129.16:80', '168.63.129.16:32526'],
    notes:
      'Azure IMDS, and WireServer 168.63.129.16 on 80 and 32526 (the guest agent\'s own root-only rule sits in OUTPUT, ' +
      'which forwarded container traffic never passes). 168.63.129.16:53 is Azure DNS and stays open.',
  },
  // 169.254.169.254: https://docs.oracle.com/en-us/iaas/Content/Compute/Tasks/gettingmetadata.htm
  //   ("an HTTP endpoint listening on 169.254.169.254").
  // fd00:c1::a9fe:a9fe: NOT on that page. Found in cloud-init (canonical/cloud-init
  //   cloudinit/sources/DataSourceOracle.py IPV6_METADATA_ROOT = "http://[fd00:c1::a9fe:a9fe]/opc/v{version}/")
  //   and in Oracle's own OKE node start-up script (tries 169.254.169.254 then [fd00:c1::a9fe:a9fe]).
  oci: {
    cloud: 'oci',
    endpoints: ['169.254.169.254:80', '[fd00:c1::a9fe:a9fe]:80'],
    notes: 'OCI IMDS (v1 and v2 share the address) over IPv4, and its IPv6 address (used by cloud-init and OKE; not on Oracle\'s IMDS page).',
  },
  // https://docs.openstack.org/nova/latest/admin/metadata-service.html
  //   ("Guests access the service at 169.254.169.254 or at fe80::a9fe:a9fe").
  // fe80::a9fe:a9fe is left out: it is link-local, so it exists only on the VM's own link
  // (clients say fe80::a9fe:a9fe%eth0). A container on a bridge has a different link: its
  // neighbour discovery for fe80::a9fe:a9fe goes to the bridge, and a router never forwards a
  // link-local destination (RFC 4291 2.5.6), so the packet cannot reach the host's uplink.
  // A rule for it would match nothing; a container on the VM's link (macvlan/ipvlan) bypasses
  // the host's PREROUTING and is reported as not coverable instead.
  openstack: {
    cloud: 'openstack',
    endpoints: ['169.254.169.254:80'],
    notes:
      'Nova metadata over IPv4. Its IPv6 address fe80::a9fe:a9fe is link-local: a container behind a bridge cannot reach it ' +
      '(the host never forwards link-local destinations), and one on the VM\'s link (macvlan) bypasses the host, so no rule is written for it.',
  },
  // 100.100.100.200: https://www.alibabacloud.com/help/en/ecs/user-guide/view-instance-metadata
  //   ("curl http://100.100.100.200/latest/meta-data/instance-id"; token at /latest/api/token).
  // fd00:100::100:200: NOT found in Alibaba's docs by search; named as ECS's IPv6 metadata address in
  //   canonical/cloud-init pull request 6893 (datasource/aliyun: add IPv6 metaserver). A ULA: blocked unverified.
  // 169.254.169.254: not documented for Alibaba; kept by the rule above.
  alibaba: {
    cloud: 'alibaba',
    endpoints: ['100.100.100.200:80', '[fd00:100::100:200]:80', '169.254.169.254:80'],
    notes:
      'ECS metadata at 100.100.100.200, its IPv6 address fd00:100::100:200 (from cloud-init, not Alibaba\'s docs), ' +
      'and 169.254.169.254 kept as a safety net.',
  },
  // https://www.tencentcloud.com/document/product/213/4934 documents http://metadata.tencentyun.com/latest/meta-data/
  // but no address. 169.254.0.23 is what metadata.tencentyun.com resolves to; NOT on Tencent's page, taken from
  // DataDog/datadog-agent pkg/util/cloudproviders/tencent/tencent.go (metadataURL = "http://169.254.0.23").
  // Whether 169.254.169.254 also answers on CVM could not be confirmed; kept by the rule above.
  tencent: {
    cloud: 'tencent',
    endpoints: ['169.254.0.23:80', '169.254.169.254:80'],
    notes: 'CVM metadata (metadata.tencentyun.com, 169.254.0.23; the address is not on Tencent\'s page), and 169.254.169.254 kept as a safety net.',
  },
  // https://docs.digitalocean.com/products/droplets/how-to/access-metadata/
  //   ("the special, static, link-local IP address 169.254.169.254"; no IPv6 address is documented).
  digitalocean: {
    cloud: 'digitalocean',
    endpoints: ['169.254.169.254:80'],
    notes: 'Droplet metadata over IPv4 (DigitalOcean documents no IPv6 address).',
  },
};

export function presetFor(cloud: Cloud): CloudPreset {
  return PRESETS[cloud];
}

/**
 * The files of /sys/class/dmi/id that detection reads, and nothing else. product_uuid is
 * readable by root only; without it AWS is still found from sys_vendor or bios_version.
 */
export const DMI_FILES = [
  'sys_vendor',
  'product_name',
  'bios_vendor',
  'bios_version',
  'board_vendor',
  'board_asset_tag',
  'chassis_asset_tag',
  'product_uuid',
] as const;
export type DmiFile = (typeof DMI_FILES)[number];

/** DMI values by file name, trimmed; a file that could not be read is absent. */
export interface DmiFacts {
  readonly [file: string]: string | undefined;
}

export interface CloudDetection {
  readonly cloud: Cloud | null;
  /** A sentence naming the DMI file and value that decided, or why nothing did. */
  readonly reason: string;
}

interface Condition {
  readonly file: DmiFile;
  readonly test: 'is' | 'starts with' | 'contains' | 'matches';
  readonly want: string | RegExp;
}

interface Signature {
  readonly cloud: Cloud;
  readonly when: readonly Condition[];
  /** Said after the evidence when the signature is not conclusive. */
  readonly caveat?: string;
}

const is = (file: DmiFile, want: string): Condition => ({ file, test: 'is', want });

/*
 * First match wins. Asset tags come first: they are set by the cloud on purpose, while the
 * vendor strings of an OCI or OpenStack VM are often just QEMU's. The weak AWS signals come
 * last: the AWS preset equals the default, so a false AWS match changes nothing.
 * Sources: canonical/cloud-init tools/ds-identify (dscheck_* functions), systemd
 * src/basic/virt.c (dmi_vendor_table, prefix match on sys_vendor/board_vendor/bios_vendor),
 * https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/identify_ec2_instances.html.
 */
const SIGNATURES: readonly Signature[] = [
  // ds-identify is_azure_chassis.
  { cloud: 'azure', when: [is('chassis_asset_tag', '7783-7084-3265-9085-8269-3286-77')] },
  // ds-identify dscheck_Oracle.
  { cloud: 'oci', when: [is('chassis_asset_tag', 'OracleCloud.com')] },
  // systemd virt.c: "Amazon EC2" (Nitro, virtualised and metal alike; both have IMDS).
  { cloud: 'aws', when: [{ file: 'sys_vendor', test: 'starts with', want: 'Amazon EC2' }] },
  { cloud: 'aws', when: [{ file: 'board_vendor', test: 'starts with', want: 'Amazon EC2' }] },
  { cloud: 'aws', when: [{ file: 'bios_vendor', test: 'starts with', want: 'Amazon EC2' }] },
  // ds-identify dscheck_GCE; google-cloud-go compute/metadata systemInfoSuggestsGCE ("Google" or "Google Compute Engine").
  { cloud: 'gcp', when: [is('product_name', 'Google Compute Engine')] },
  { cloud: 'gcp', when: [is('product_name', 'Google')] },
  // ds-identify dscheck_AliYun; the vendor as ECS sets it (modalias svnAlibabaCloud:pnAlibabaCloudECS).
  { cloud: 'alibaba', when: [is('product_name', 'Alibaba Cloud ECS')] },
  { cloud: 'alibaba', when: [is('sys_vendor', 'Alibaba Cloud')] },
  // No first-party source found; "Manufacturer: Tencent Cloud" / "Product Name: CVM" as dmidecode shows them on CVM.
  { cloud: 'tencent', when: [is('sys_vendor', 'Tencent Cloud')] },
  { cloud: 'tencent', when: [is('product_name', 'CVM')] },
  // ds-identify dscheck_DigitalOcean; cloud-init helpers/digitalocean.py.
  { cloud: 'digitalocean', when: [is('sys_vendor', 'DigitalOcean')] },
  // ds-identify dscheck_OpenStack: product name or asset tag, including clouds built on Nova.
  ...['OpenStack Nova', 'OpenStack Compute'].map((name): Signature => ({ cloud: 'openstack', when: [is('product_name', name)] })),
  ...['OpenStack Nova', 'OpenStack Compute', 'OpenTelekomCloud', 'SAP CCloud VM', 'HUAWEICLOUD', 'Samsung Cloud Platform'].map(
    (tag): Signature => ({ cloud: 'openstack', when: [is('chassis_asset_tag', tag)] }),
  ),
  // An Azure VM without its chassis tag. A Hyper-V VM on premises looks the same; taking it
  // for Azure only adds rules for addresses nothing answers on there.
  {
    cloud: 'azure',
    when: [is('sys_vendor', 'Microsoft Corporation'), is('product_name', 'Virtual Machine')],
    caveat: 'a Hyper-V VM outside Azure looks the same, and blocking Azure\'s addresses there costs nothing',
  },
  // Xen-era EC2: the BIOS version is Amazon's build of Xen's, e.g. "4.11.amazon".
  { cloud: 'aws', when: [{ file: 'bios_version', test: 'contains', want: 'amazon' }] },
  // AWS identify_ec2_instances: on Nitro board_asset_tag is the instance ID.
  { cloud: 'aws', when: [{ file: 'board_asset_tag', test: 'matches', want: /^i-[0-9a-f]{8,17}$/ }] },
  // AWS identify_ec2_instances: the UUID starts with "ec2", or shows it byte-swapped (little-endian SMBIOS).
  {
    cloud: 'aws',
    when: [{ file: 'product_uuid', test: 'matches', want: /^(ec2[0-9a-f]{5}|[0-9a-f]{4}2[0-9a-f]ec)-/i }],
    caveat: 'AWS calls this check quick but not certain',
  },
];

function holds(c: Condition, value: string | undefined): boolean {
  if (value === undefined) return false;
  if (c.want instanceof RegExp) return c.want.test(value);
  if (c.test === 'starts with') return value.startsWith(c.want);
  if (c.test === 'contains') return value.toLowerCase().includes(c.want.toLowerCase());
  return value === c.want;
}

/** Single quotes as a human would write them; anything odd is shown escaped, never raw. */
function quote(value: string): string {
  return /^[\x20-\x26\x28-\x7e]*$/.test(value) ? `'${value}'` : JSON.stringify(value);
}

function evidence(c: Condition, value: string): string {
  if (c.test === 'is') return `${c.file} is ${quote(value)}`;
  const want = c.want instanceof RegExp ? 'the EC2 pattern' : quote(c.want);
  return `${c.file} is ${quote(value)}, which ${c.test} ${want}`;
}

/** Which cloud the DMI facts name, and the sentence that says why. Plain data in, plain data out. */
export function detectCloud(dmi: DmiFacts): CloudDetection {
  for (const sig of SIGNATURES) {
    if (!sig.when.every((c) => holds(c, dmi[c.file]))) continue;
    const found = sig.when.map((c) => evidence(c, dmi[c.file] as string)).join(' and ');
    return { cloud: sig.cloud, reason: sig.caveat === undefined ? found : `${found} (${sig.caveat})` };
  }
  const seen = DMI_FILES.flatMap((f) => (dmi[f] === undefined ? [] : [`${f} is ${quote(dmi[f] as string)}`]));
  if (seen.length === 0) return { cloud: null, reason: 'no DMI file could be read, so no cloud signature could match' };
  return { cloud: null, reason: `no known cloud's DMI signature matched (${seen.join(', ')})` };
}

export interface CloudResolution {
  /** The preset in force; null when the default endpoints are used. */
  readonly cloud: Cloud | null;
  readonly chosen: 'configured' | 'detected' | 'default';
  readonly reason: string;
  readonly endpoints: readonly string[];
}

/**
 * The endpoints for a `cloud:` setting, and why, for the audit. `dmi` is null when DMI was not
 * read (not Linux, or the caller skipped it). Explicit `endpoints:` in the config override all
 * of this; that is decided by the caller, before this is asked.
 */
export function resolveCloudEndpoints(choice: CloudChoice, dmi: DmiFacts | null): CloudResolution {
  if (choice !== 'auto') {
    const detected = dmi === null ? null : detectCloud(dmi);
    const disagree = detected?.cloud != null && detected.cloud !== choice ? ` (DMI points at ${detected.cloud}: ${detected.reason})` : '';
    return { cloud: choice, chosen: 'configured', reason: `cloud: ${choice} is set in the config${disagree}`, endpoints: presetFor(choice).endpoints };
  }
  if (dmi === null) {
    return { cloud: null, chosen: 'default', reason: 'cloud: auto, but DMI was not read; using the default endpoints', endpoints: DEFAULT_ENDPOINTS };
  }
  const detected = detectCloud(dmi);
  if (detected.cloud === null) {
    return { cloud: null, chosen: 'default', reason: `cloud: auto found no cloud: ${detected.reason}; using the default endpoints`, endpoints: DEFAULT_ENDPOINTS };
  }
  return { cloud: detected.cloud, chosen: 'detected', reason: `cloud: auto detected ${detected.cloud}: ${detected.reason}`, endpoints: presetFor(detected.cloud).endpoints };
}
