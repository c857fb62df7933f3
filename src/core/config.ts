import * as z from 'zod';
import { ConfigError } from '../errors.js';
import { cgroupPathProblem } from './cgroup.js';
import { CLOUDS, type CloudChoice, type CloudResolution, type DmiFacts, resolveCloudEndpoints } from './clouds.js';
import { type Endpoint, parseEndpoint } from './endpoint.js';
import { type MetricsListen, parseMetricsListen, parseMetricsTextfile } from './metrics-settings.js';
import { dockerHostProblem } from './docker-host.js';
import { interfaceNameProblem } from './names.js';
import { DEFAULT_DRIFT_SCHEDULE, scheduleProblem } from './schedule.js';
import { DEFAULT_TARGET, type Target, parseTarget } from './target.js';

export type Mode = 'enforce' | 'report';
export type BootScriptPolicy = 'auto' | 'always' | 'never';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

/** The validated configuration: nothing in it can hold a value that would break a payload or script. */
export interface Config {
  readonly mode: Mode;
  readonly backend: 'auto' | 'nft' | 'legacy';
  /** Interfaces whose forwarded traffic keeps access (literal names). Everything else is covered. */
  readonly allow: readonly string[];
  readonly cloud: CloudChoice;
  /** The endpoints hidden: explicit, or the cloud preset's. */
  readonly endpoints: readonly Endpoint[];
  /** How the endpoints were chosen, for the audit. */
  readonly endpointChoice: { readonly chosen: 'explicit' | CloudResolution['chosen']; readonly cloud: string | null; readonly reason: string };
  /** Where `cloud: auto` reads DMI from. */
  readonly dmiDir: string;
  /** How a Docker network the host cannot cover (macvlan, ipvlan) is judged. */
  readonly notCoverable: 'warn' | 'fail';
  /** Cover host-network containers in filter OUTPUT by cgroup. */
  readonly hostNetwork: boolean;
  /** Host-network containers (by name) that keep access, besides those labelled imds-guard.allow=true. */
  readonly hostNetworkExempt: readonly string[];
  /** Docker's container cgroup parent (v2 path): auto = /docker with the cgroupfs driver, none with systemd unless set. */
  readonly cgroupParent: string;
  /** The host's cgroup tree mounted elsewhere (a container's /host/sys/fs/cgroup); null: the cgroup2 mount found in /proc/self/mountinfo. */
  readonly cgroupRoot: string | null;
  readonly target: Target;
  readonly target6: Target;
  readonly bootScript: BootScriptPolicy;
  readonly bootScriptDir: string;
  readonly openrcRoot: string;
  readonly enableLocalService: boolean;
  readonly stateDir: string;
  readonly docker: boolean;
  readonly dockerHost: string | null;
  readonly driftSchedule: string;
  readonly lockWaitSeconds: number;
  /** Seconds to wait for another apply, remove or agent pass of this network namespace (0: do not wait). */
  readonly writerLockWaitSeconds: number;
  readonly conntrack: boolean;
  readonly logLevel: LogLevel;
  /** Serve Prometheus metrics here (null: off). */
  readonly metricsListen: MetricsListen | null;
  /** Write node_exporter textfile metrics here after each pass (null: off). */
  readonly metricsTextfile: string | null;
  /** The agent's `audit --probe` schedule (cron with seconds; null: off). */
  readonly probeSchedule: string | null;
}

export const DEFAULT_CONFIG_PATH = '/etc/imds-guard/config.yaml';

/** A refinement from a core check that says why a value is bad (or null when it is not). */
function problemFrom(problemOf: (text: string) => string | null) {
  return (text: string, ctx: z.RefinementCtx): void => {
    const problem = problemOf(text);
    if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
  };
}

const absolutePath = z
  .string()
  .refine((p) => p.startsWith('/') && !/[\0\n\r]/.test(p), 'must be an absolute path without newlines');

// Six-field cron (with seconds) or five-field, parsed by the cron package the agent
// schedules it with: what passes here cannot make a start or a reload throw.
const cronExpression = z
  .string()
  .regex(/^[0-9*/,\-A-Za-z? ]+$/, { message: 'must be a cron expression', abort: true })
  .superRefine(problemFrom(scheduleProblem));

const interfaceName = z.string().superRefine(problemFrom(interfaceNameProblem));

// The pass turns it into a CgroupPath: a path cgroupPathProblem refuses would silently
// leave host-network containers without the parent rule, and the root cgroup would
// match the host's own processes too, taking the metadata from the host itself.
const cgroupParent = z
  .string()
  .regex(/^(auto|\/[A-Za-z0-9._@:+=,\/-]*)$/, 'must be auto or an absolute cgroup v2 path')
  .superRefine((path, ctx) => {
    if (path === 'auto') return;
    const problem = path === '/' ? "is the root cgroup: a rule for it would match the host's own processes too" : cgroupPathProblem(path);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

/** A string field parsed by one of the core parsers, which return a reason string on failure. */
function parsedBy<T>(parse: (text: string) => T | string) {
  return z.string().transform((text, ctx) => {
    const v = parse(text);
    if (typeof v !== 'string') return v;
    ctx.addIssue({ code: 'custom', message: v });
    return z.NEVER;
  });
}

const endpoint = parsedBy(parseEndpoint);
const metricsListen = parsedBy(parseMetricsListen);
const metricsTextfile = parsedBy(parseMetricsTextfile);
const target = parsedBy(parseTarget);

const schema = z
  .object({
    mode: z.enum(['enforce', 'report']).default('enforce'),
    backend: z.enum(['auto', 'nft', 'legacy']).default('auto'),
    allow: z.array(interfaceName).default([]),
    cloud: z.enum(['auto', ...CLOUDS]).default('auto'),
    endpoints: z.array(endpoint).min(1, 'must name at least one endpoint').optional(),
    dmiDir: absolutePath.default('/sys/class/dmi/id'),
    notCoverable: z.enum(['warn', 'fail']).default('warn'),
    hostNetwork: z.boolean().default(true),
    hostNetworkExempt: z.array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'must be a container name')).default([]),
    cgroupParent: cgroupParent.default('auto'),
    cgroupRoot: absolutePath.nullable().default(null),
    target: target.default(parseTarget(DEFAULT_TARGET) as Target),
    target6: target.optional(),
    bootScript: z.enum(['auto', 'always', 'never']).default('auto'),
    bootScriptDir: absolutePath.default('/etc/local.d'),
    openrcRoot: absolutePath.default('/etc/runlevels'),
    enableLocalService: z.boolean().default(false),
    stateDir: absolutePath.default('/var/lib/imds-guard'),
    docker: z.boolean().default(true),
    // The rules go into this host's nat table, so only this host's Docker can say which
    // bridges need them: a local socket, or TCP (with TLS) to a daemon on this host.
    dockerHost: z
      .string()
      .regex(/^(unix|tcp|http|https):\/\/\S+$/, { message: "must be unix:///PATH or tcp://HOST:PORT of this host's Docker (ssh:// is not supported)", abort: true })
      .superRefine(problemFrom(dockerHostProblem))
      .nullable()
      .default(null),
    driftSchedule: cronExpression.default(DEFAULT_DRIFT_SCHEDULE),
    lockWaitSeconds: z.number().int().min(1).max(600).default(5),
    // Longer than the xtables wait: a writer ahead of us may itself wait for that lock twice (one restore per family).
    writerLockWaitSeconds: z.number().int().min(0).max(600).default(30),
    conntrack: z.boolean().default(true),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    metricsListen: metricsListen.nullable().default(null),
    metricsTextfile: metricsTextfile.nullable().default(null),
    probeSchedule: cronExpression.nullable().default(null),
  })
  .strict();

export type RawConfig = Record<string, unknown>;

/** One layer of settings and where it came from, for error messages. */
export interface ConfigLayer {
  readonly source: string;
  readonly values: RawConfig;
}

// Keys of earlier versions, refused with what replaced them.
const REMOVED_KEYS: Readonly<Record<string, string>> = {
  interfaces: 'every interface is covered now, whatever its name; list the interfaces that must keep access under allow',
  ipset: 'custom-named bridges need no set any more: every interface is covered',
};

/**
 * Merges layers (later wins), validates once, and names the key, value and source of the
 * first problem. `dmi` is read by the caller only when the endpoints come from `cloud: auto`.
 */
export function resolveConfig(layers: readonly ConfigLayer[], dmi: DmiFacts | null = null): Config {
  const merged: RawConfig = {};
  const sourceOf = new Map<string, string>();
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer.values)) {
      if (value === undefined) continue;
      merged[key] = value;
      sourceOf.set(key, layer.source);
    }
  }
  for (const [key, why] of Object.entries(REMOVED_KEYS)) {
    if (key in merged) throw new ConfigError(`${sourceOf.get(key) ?? 'config'}: ${key} is no longer a setting: ${why}`);
  }
  const parsed = schema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const top = String(issue.path[0] ?? '');
    const key = issue.path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
    const value = valueAt(merged, issue.path);
    const shown = value === undefined ? '' : ` ${JSON.stringify(value)}`;
    if (issue.code === 'unrecognized_keys') {
      // The issue sits at the root; name the first unknown key, its value and the layer it came from.
      const first = issue.keys[0] ?? '';
      const others = issue.keys.length > 1 ? ` (nor ${issue.keys.slice(1).join(', ')})` : '';
      throw new ConfigError(`${sourceOf.get(first) ?? 'config'}: ${first} ${JSON.stringify(merged[first])} is not a known key${others}`);
    }
    const where = sourceOf.get(top) ?? 'config';
    throw new ConfigError(`${where}: ${key || '(root)'}${shown} ${issue.message}`);
  }
  const c = parsed.data;
  const named = (k: 'target' | 'target6'): string => `${sourceOf.get(k) ?? 'config'}: ${k} ${JSON.stringify(merged[k])}`;
  const cloud = resolveCloudEndpoints(c.cloud, c.cloud === 'auto' && c.endpoints === undefined ? dmi : null);
  const endpoints = c.endpoints ?? cloud.endpoints.map((e) => parseEndpoint(e) as Endpoint);
  const endpointChoice =
    c.endpoints !== undefined ? { chosen: 'explicit' as const, cloud: null, reason: `endpoints set by ${sourceOf.get('endpoints') ?? 'config'}` } : { chosen: cloud.chosen, cloud: cloud.cloud, reason: cloud.reason };
  return { ...c, metricsTextfile: c.metricsTextfile?.path ?? null, endpoints, endpointChoice, target6: pickTarget6(c.target, c.target6, endpoints, named) };
}

/** Whether the endpoints depend on DMI (so the caller must read it before resolving). */
export function needsDmi(layers: readonly ConfigLayer[]): boolean {
  const last = (k: string): unknown => [...layers].reverse().find((l) => l.values[k] !== undefined)?.values[k];
  return last('endpoints') === undefined && (last('cloud') ?? 'auto') === 'auto';
}

function pickTarget6(target: Target, target6: Target | undefined, endpoints: readonly Endpoint[], named: (k: 'target' | 'target6') => string): Target {
  const hasV6 = endpoints.some((e) => e.family === 'ipv6');
  const hasV4 = endpoints.some((e) => e.family === 'ipv4');
  if (target.kind === 'dnat' && target.family === 'ipv6' && hasV4) {
    throw new ConfigError(`${named('target')} is an IPv6 address but IPv4 endpoints are configured; give an IPv4 target and set target6`);
  }
  if (target6 !== undefined) {
    if (target6.kind === 'dnat' && target6.family !== 'ipv6') throw new ConfigError(`${named('target6')} must be redirect or an IPv6 dnat address`);
    return target6;
  }
  if (target.kind === 'dnat' && target.family === 'ipv4' && hasV6) {
    throw new ConfigError(`${named('target')} is a dnat to an IPv4 address, which cannot serve the IPv6 endpoints; set target6 (e.g. redirect)`);
  }
  return target;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/** Environment variables a deployment may set, IMDS_GUARD_<KEY>; lists are comma-separated. */
export const ENV_KEYS: Readonly<Record<string, { key: string; kind: 'string' | 'list' | 'boolean' | 'number' }>> = {
  IMDS_GUARD_MODE: { key: 'mode', kind: 'string' },
  IMDS_GUARD_BACKEND: { key: 'backend', kind: 'string' },
  IMDS_GUARD_ALLOW: { key: 'allow', kind: 'list' },
  // Read only to be refused with what replaced them (REMOVED_KEYS).
  IMDS_GUARD_INTERFACES: { key: 'interfaces', kind: 'list' },
  IMDS_GUARD_IPSET: { key: 'ipset', kind: 'string' },
  IMDS_GUARD_CLOUD: { key: 'cloud', kind: 'string' },
  IMDS_GUARD_NOT_COVERABLE: { key: 'notCoverable', kind: 'string' },
  IMDS_GUARD_HOST_NETWORK: { key: 'hostNetwork', kind: 'boolean' },
  IMDS_GUARD_HOST_NETWORK_EXEMPT: { key: 'hostNetworkExempt', kind: 'list' },
  IMDS_GUARD_CGROUP_PARENT: { key: 'cgroupParent', kind: 'string' },
  IMDS_GUARD_CGROUP_ROOT: { key: 'cgroupRoot', kind: 'string' },
  IMDS_GUARD_ENDPOINTS: { key: 'endpoints', kind: 'list' },
  IMDS_GUARD_TARGET: { key: 'target', kind: 'string' },
  IMDS_GUARD_TARGET6: { key: 'target6', kind: 'string' },
  IMDS_GUARD_BOOT_SCRIPT: { key: 'bootScript', kind: 'string' },
  IMDS_GUARD_BOOT_SCRIPT_DIR: { key: 'bootScriptDir', kind: 'string' },
  IMDS_GUARD_OPENRC_ROOT: { key: 'openrcRoot', kind: 'string' },
  IMDS_GUARD_STATE_DIR: { key: 'stateDir', kind: 'string' },
  IMDS_GUARD_DOCKER: { key: 'docker', kind: 'boolean' },
  IMDS_GUARD_DRIFT_SCHEDULE: { key: 'driftSchedule', kind: 'string' },
  IMDS_GUARD_LOCK_WAIT_SECONDS: { key: 'lockWaitSeconds', kind: 'number' },
  IMDS_GUARD_WRITER_LOCK_WAIT_SECONDS: { key: 'writerLockWaitSeconds', kind: 'number' },
  IMDS_GUARD_CONNTRACK: { key: 'conntrack', kind: 'boolean' },
  IMDS_GUARD_LOG_LEVEL: { key: 'logLevel', kind: 'string' },
  IMDS_GUARD_METRICS_LISTEN: { key: 'metricsListen', kind: 'string' },
  IMDS_GUARD_METRICS_TEXTFILE: { key: 'metricsTextfile', kind: 'string' },
  IMDS_GUARD_PROBE_SCHEDULE: { key: 'probeSchedule', kind: 'string' },
  DOCKER_HOST: { key: 'dockerHost', kind: 'string' },
};

/** Turns environment strings into typed raw values; bad booleans/numbers stay strings so the schema names them. */
export function configFromEnv(env: NodeJS.ProcessEnv): RawConfig {
  const out: RawConfig = {};
  for (const [name, { key, kind }] of Object.entries(ENV_KEYS)) {
    const text = env[name];
    if (text === undefined || text === '') continue;
    out[key] = coerce(text, kind);
  }
  return out;
}

export function coerce(text: string, kind: 'string' | 'list' | 'boolean' | 'number'): unknown {
  switch (kind) {
    case 'list':
      return text.split(',').map((s) => s.trim()).filter((s) => s !== '');
    case 'boolean':
      return text === 'true' || text === '1' ? true : text === 'false' || text === '0' ? false : text;
    case 'number':
      return /^[0-9]+$/.test(text) ? Number(text) : text;
    default:
      return text;
  }
}
