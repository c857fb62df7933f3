import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { CronJob } from 'cron';
import { type Cloud, presetFor } from '../../src/core/clouds.js';
import { type ConfigLayer, configFromEnv, needsDmi, resolveConfig } from '../../src/core/config.js';
import { type Endpoint, formatEndpoint, parseEndpoint } from '../../src/core/endpoint.js';
import { DEFAULT_DRIFT_SCHEDULE } from '../../src/core/schedule.js';
import { ConfigError } from '../../src/errors.js';
import { readDmi } from '../../src/shell/dmi.js';

const FILE = 'config file /etc/imds-guard/config.yaml';
const DMI = join(import.meta.dirname, '..', 'fixtures', 'dmi');
const layers = (file: Record<string, unknown>, env: Record<string, string>, flags: Record<string, unknown>): ConfigLayer[] => [
  { source: FILE, values: file },
  { source: 'environment', values: configFromEnv(env) },
  { source: 'command line', values: flags },
];
const flags = (values: Record<string, unknown>): ConfigLayer[] => layers({}, {}, values);
const shown = (endpoints: readonly Endpoint[]): string[] => endpoints.map(formatEndpoint);
const presetShown = (cloud: Cloud): string[] => presetFor(cloud).endpoints.map((e) => formatEndpoint(parseEndpoint(e) as Endpoint));

/** The one-line ConfigError (exit 2) that resolving `input` must throw. */
function refuses(input: readonly ConfigLayer[], message: string | RegExp): void {
  assert.throws(() => resolveConfig(input), (e: unknown) => {
    assert.ok(e instanceof ConfigError, String(e));
    if (typeof message === 'string') assert.equal(e.message, message);
    else assert.match(e.message, message);
    assert.equal(e.message.includes('\n'), false, 'one line');
    assert.equal(e.exitCode, 2);
    return true;
  });
}

describe('resolveConfig layers', () => {
  test('with nothing set, every interface is covered (no allow list), the default endpoints are hidden with a REDIRECT to port 1, and host-network containers are covered', () => {
    assert.deepEqual(resolveConfig(layers({}, {}, {})), {
      mode: 'enforce',
      backend: 'auto',
      allow: [],
      cloud: 'auto',
      dmiDir: '/sys/class/dmi/id',
      notCoverable: 'warn',
      hostNetwork: true,
      hostNetworkExempt: [],
      cgroupParent: 'auto',
      cgroupRoot: null,
      target: { kind: 'redirect', port: 1 },
      bootScript: 'auto',
      bootScriptDir: '/etc/local.d',
      openrcRoot: '/etc/runlevels',
      enableLocalService: false,
      stateDir: '/var/lib/imds-guard',
      docker: true,
      dockerHost: null,
      driftSchedule: '*/30 * * * * *',
      lockWaitSeconds: 5,
      writerLockWaitSeconds: 30,
      conntrack: true,
      logLevel: 'info',
      metricsListen: null,
      metricsTextfile: null,
      probeSchedule: null,
      endpoints: [
        { family: 'ipv4', address: '169.254.169.254', port: 80 },
        { family: 'ipv6', address: 'fd00:ec2::254', port: 80 },
      ],
      endpointChoice: { chosen: 'default', cloud: null, reason: 'cloud: auto, but DMI was not read; using the default endpoints' },
      target6: { kind: 'redirect', port: 1 },
    });
  });

  test('the environment overrides the file, and typed values are coerced', () => {
    const c = resolveConfig(
      layers(
        { mode: 'enforce', allow: ['eth9'] },
        { IMDS_GUARD_MODE: 'report', IMDS_GUARD_ALLOW: ' vmbr0 , eth1,', IMDS_GUARD_DOCKER: 'false', IMDS_GUARD_LOCK_WAIT_SECONDS: '30', IMDS_GUARD_HOST_NETWORK: '0', IMDS_GUARD_NOT_COVERABLE: 'fail' },
        {},
      ),
    );
    assert.equal(c.mode, 'report');
    assert.deepEqual(c.allow, ['vmbr0', 'eth1']);
    assert.equal(c.docker, false);
    assert.equal(c.lockWaitSeconds, 30);
    assert.equal(c.hostNetwork, false);
    assert.equal(c.notCoverable, 'fail');
  });

  test('flags win over the environment and the file', () => {
    const c = resolveConfig(layers({ backend: 'nft', target: 'redirect:2', cloud: 'aws' }, { IMDS_GUARD_BACKEND: 'nft', IMDS_GUARD_TARGET: 'redirect:3', IMDS_GUARD_CLOUD: 'azure' }, { backend: 'legacy', target: 'redirect:4', cloud: 'gcp' }));
    assert.equal(c.backend, 'legacy');
    assert.deepEqual(c.target, { kind: 'redirect', port: 4 });
    assert.equal(c.cloud, 'gcp');
  });

  test('a bad value in the file is overridden by a good flag, so it does not count', () => {
    assert.deepEqual(resolveConfig(layers({ allow: ['bad name'] }, {}, { allow: ['eth1'] })).allow, ['eth1']);
  });

  test('empty environment variables are ignored', () => {
    assert.deepEqual(configFromEnv({ IMDS_GUARD_MODE: '', IMDS_GUARD_ALLOW: '' }), {});
  });

  const targets: readonly [string, Record<string, unknown>, unknown, unknown][] = [
    ['redirect', { target: 'redirect' }, { kind: 'redirect', port: 1 }, { kind: 'redirect', port: 1 }],
    ['redirect:8080', { target: 'redirect:8080' }, { kind: 'redirect', port: 8080 }, { kind: 'redirect', port: 8080 }],
    ['dnat:1.1.1.1 with target6 redirect', { target: 'dnat:1.1.1.1', target6: 'redirect' }, { kind: 'dnat', family: 'ipv4', address: '1.1.1.1', port: null }, { kind: 'redirect', port: 1 }],
    ['dnat:1.1.1.1:8080 with an IPv4 endpoint only', { target: 'dnat:1.1.1.1:8080', endpoints: ['169.254.169.254'] }, { kind: 'dnat', family: 'ipv4', address: '1.1.1.1', port: 8080 }, { kind: 'dnat', family: 'ipv4', address: '1.1.1.1', port: 8080 }],
    ['dnat:[fd00::1]:80 with an IPv6 endpoint only', { target: 'dnat:[fd00::1]:80', endpoints: ['[fd00:ec2::254]:80'] }, { kind: 'dnat', family: 'ipv6', address: 'fd00::1', port: 80 }, { kind: 'dnat', family: 'ipv6', address: 'fd00::1', port: 80 }],
    ['target6 dnat:[fd00::1]:8080', { target6: 'dnat:[fd00::1]:8080' }, { kind: 'redirect', port: 1 }, { kind: 'dnat', family: 'ipv6', address: 'fd00::1', port: 8080 }],
  ];
  for (const [form, values, target, target6] of targets) {
    test(`target form ${form} is accepted`, () => {
      const c = resolveConfig(flags(values));
      assert.deepEqual(c.target, target);
      assert.deepEqual(c.target6, target6);
    });
  }
});

describe('what check-config accepts, the agent can start with', () => {
  test('the default drift schedule, which validation takes as known good, is accepted and fires for the cron package itself', () => {
    assert.equal(resolveConfig(layers({}, {}, {})).driftSchedule, DEFAULT_DRIFT_SCHEDULE);
    const job = CronJob.from({ cronTime: DEFAULT_DRIFT_SCHEDULE, onTick: () => {}, start: false });
    assert.ok(job.nextDate().toMillis() - Date.now() <= 30_000);
  });

  for (const expression of ['*/1 * * * * *', '0 */5 * * * *', '*/30 * * * *', '0 0 29 2 *', '0 0 * * MON-FRI', '15,45 * * * * *']) {
    test(`drift schedule ${JSON.stringify(expression)} is accepted, and CronJob.from schedules it without throwing`, () => {
      const c = resolveConfig(layers({ driftSchedule: expression }, {}, {}));
      const job = CronJob.from({ cronTime: c.driftSchedule, onTick: () => {}, start: false });
      assert.ok(job.nextDate().isValid);
    });
  }

  for (const host of ['unix:///var/run/docker.sock', 'tcp://socket-proxy:2375', 'tcp://10.0.0.5', 'tcp://[::1]:2375', 'https://docker-1:2376', 'http://127.0.0.1:2375/']) {
    test(`Docker host ${host} is accepted`, () => {
      assert.equal(resolveConfig(layers({}, { DOCKER_HOST: host }, {})).dockerHost, host);
    });
  }
});

describe('allow: the interfaces that keep access are literal names', () => {
  // Names Linux and Docker accept, which a wildcard could never name exactly.
  for (const name of ['docker0', 'docker_gwbridge', 'br-0123456789ab', 'vmbr0', 'c,1', 'abcdefghijklmno', 'eth0.100', 'lxdbr0']) {
    test(`${JSON.stringify(name)} is accepted as it is`, () => assert.deepEqual(resolveConfig(flags({ allow: [name] })).allow, [name]));
  }
  const refused: readonly [string, string][] = [
    ['br-+', "is a wildcard ('+'): an allowed interface must be named exactly"],
    ['+', "is a wildcard ('+'): an allowed interface must be named exactly"],
    ['p+x', "is a wildcard ('+'): an allowed interface must be named exactly"],
    ['docker 1', 'contains whitespace or a non-printable character'],
    ['abcdefghijklmnop', 'is longer than 15 bytes'],
    ['abcdefghijklmné', 'is longer than 15 bytes'],
    ['br/0', 'contains a character the kernel or a shell script cannot take (/ : quote, backslash, $, !)'],
    ['$(reboot)', 'contains a character the kernel or a shell script cannot take (/ : quote, backslash, $, !)'],
    ['..', 'is not a valid name'],
    ['', 'is empty'],
  ];
  for (const [name, why] of refused) {
    test(`${JSON.stringify(name)} is refused: ${why}`, () => refuses(flags({ allow: ['eth1', name] }), `command line: allow[1] ${JSON.stringify(name)} ${why}`));
  }
  test('a name from the environment is refused with its source', () => {
    refuses(layers({}, { IMDS_GUARD_ALLOW: 'dock\ner0' }, {}), 'environment: allow[0] "dock\\ner0" contains whitespace or a non-printable character');
  });
});

describe('keys of earlier versions are refused with what replaced them, in one line', () => {
  const cases: readonly [string, ConfigLayer[], string][] = [
    ['interfaces in the file', layers({ interfaces: ['docker0', 'br-+'] }, {}, {}), `${FILE}: interfaces is no longer a setting: every interface is covered now, whatever its name; list the interfaces that must keep access under allow`],
    ['interfaces as a flag', flags({ interfaces: ['docker0'] }), 'command line: interfaces is no longer a setting: every interface is covered now, whatever its name; list the interfaces that must keep access under allow'],
    ['ipset in the file', layers({ ipset: 'auto' }, {}, {}), `${FILE}: ipset is no longer a setting: custom-named bridges need no set any more: every interface is covered`],
    ['ipset: never (even a value that turned it off)', layers({ ipset: 'never' }, {}, {}), `${FILE}: ipset is no longer a setting: custom-named bridges need no set any more: every interface is covered`],
  ];
  for (const [what, input, message] of cases) test(what, () => refuses(input, message));
});

describe('endpoints: explicit ones win, then the cloud preset, then DMI detection, then the default', () => {
  test('explicit endpoints win over a configured cloud, and the choice names where they were set', () => {
    const c = resolveConfig(layers({ cloud: 'gcp' }, {}, { endpoints: ['169.254.169.254:80', '10.0.0.1:8080'] }));
    assert.deepEqual(shown(c.endpoints), ['169.254.169.254:80', '10.0.0.1:8080']);
    assert.deepEqual(c.endpointChoice, { chosen: 'explicit', cloud: null, reason: 'endpoints set by command line' });
  });

  test('explicit endpoints win over cloud: auto, and DMI is then not needed', () => {
    const input = layers({ endpoints: ['[fd00:ec2::254]:80'] }, {}, {});
    assert.equal(needsDmi(input), false);
    const c = resolveConfig(input, { sys_vendor: 'Google', product_name: 'Google Compute Engine' });
    assert.deepEqual(shown(c.endpoints), ['[fd00:ec2::254]:80']);
    assert.equal(c.endpointChoice.chosen, 'explicit');
  });

  for (const cloud of ['aws', 'gcp', 'azure', 'oci', 'openstack', 'alibaba', 'tencent', 'digitalocean'] as const) {
    test(`cloud: ${cloud} hides exactly its preset, whatever DMI says`, () => {
      const input = flags({ cloud });
      assert.equal(needsDmi(input), false);
      const c = resolveConfig(input, null);
      assert.deepEqual(shown(c.endpoints), presetShown(cloud));
      assert.deepEqual(c.endpointChoice, { chosen: 'configured', cloud, reason: `cloud: ${cloud} is set in the config` });
    });
  }

  test('the GCE preset covers ports 80, 8080 and 443 and its IPv6 address; Azure covers WireServer', () => {
    assert.deepEqual(shown(resolveConfig(flags({ cloud: 'gcp' })).endpoints), ['169.254.169.254:80', '169.254.169.254:8080', '169.254.169.254:443', '[fd20:ce::254]:80', '[fd20:ce::254]:8080']);
    assert.deepEqual(shown(resolveConfig(flags({ cloud: 'azure' })).endpoints), ['169.254.169.254:80', '168.63.129.16:80', '168.63.129.16:32526']);
  });

  // Each fixture directory holds the DMI files of one kind of host, as /sys/class/dmi/id shows them.
  const detected: readonly [string, Cloud | null][] = [
    ['aws', 'aws'],
    ['aws-xen', 'aws'],
    ['aws-uuid', 'aws'],
    ['gcp', 'gcp'],
    ['azure', 'azure'],
    ['hyperv', 'azure'],
    ['oci', 'oci'],
    ['openstack', 'openstack'],
    ['alibaba', 'alibaba'],
    ['tencent', 'tencent'],
    ['digitalocean', 'digitalocean'],
    ['kvm', null],
  ];
  for (const [dir, cloud] of detected) {
    test(`cloud: auto on the ${dir} DMI fixture hides ${cloud === null ? 'the default endpoints' : `the ${cloud} preset`} and says why`, async () => {
      const input = layers({}, {}, {});
      assert.equal(needsDmi(input), true);
      const c = resolveConfig(input, await readDmi(join(DMI, dir)));
      assert.deepEqual(shown(c.endpoints), cloud === null ? ['169.254.169.254:80', '[fd00:ec2::254]:80'] : presetShown(cloud));
      assert.equal(c.endpointChoice.chosen, cloud === null ? 'default' : 'detected');
      assert.equal(c.endpointChoice.cloud, cloud);
      assert.match(c.endpointChoice.reason, cloud === null ? /^cloud: auto found no cloud: / : new RegExp(`^cloud: auto detected ${cloud}: `));
    });
  }

  test('a cloud that is not in the list is refused', () => refuses(flags({ cloud: 'ibm' }), /^command line: cloud "ibm" Invalid option: expected one of "auto"\|"aws"\|/));
  test('an empty endpoint list is refused (hiding nothing is not a protection)', () => refuses(flags({ endpoints: [] }), 'command line: endpoints [] must name at least one endpoint'));
});

describe('host-network and not-coverable settings', () => {
  test('notCoverable takes warn or fail, and nothing else', () => {
    assert.equal(resolveConfig(flags({ notCoverable: 'fail' })).notCoverable, 'fail');
    refuses(flags({ notCoverable: 'error' }), 'command line: notCoverable "error" Invalid option: expected one of "warn"|"fail"');
  });

  test('hostNetworkExempt takes container names, with no leading slash', () => {
    assert.deepEqual(resolveConfig(flags({ hostNetworkExempt: ['ecs-agent', 'metadata_proxy.1'] })).hostNetworkExempt, ['ecs-agent', 'metadata_proxy.1']);
    refuses(flags({ hostNetworkExempt: ['/ecs-agent'] }), 'command line: hostNetworkExempt[0] "/ecs-agent" must be a container name');
    refuses(layers({}, { IMDS_GUARD_HOST_NETWORK_EXEMPT: 'a b' }, {}), 'environment: hostNetworkExempt[0] "a b" must be a container name');
  });

  for (const parent of ['auto', '/docker', '/docker.slice', '/system.slice/docker-ci.slice', '/kubepods/burstable']) {
    test(`cgroupParent ${parent} is accepted`, () => assert.equal(resolveConfig(flags({ cgroupParent: parent })).cgroupParent, parent));
  }
  const badParents: readonly [string, string][] = [
    ['docker', 'relative'],
    ['/docker slice', 'with a space'],
    ['/docker;reboot', 'with a shell character'],
    ["/it's", 'with a quote'],
  ];
  for (const [parent, what] of badParents) {
    test(`cgroupParent ${what} is refused`, () => refuses(flags({ cgroupParent: parent }), `command line: cgroupParent ${JSON.stringify(parent)} must be auto or an absolute cgroup v2 path`));
  }
  // The pass turns cgroupParent into a CgroupPath (core/cgroup.ts); one it cannot take would
  // silently leave host-network containers without the parent rule, and the root would
  // match every process of the host, cutting the host itself off the metadata.
  const notCanonical: readonly [string, string][] = [
    ['/docker/', 'has an empty segment (// or a trailing /)'],
    ['/docker//x', 'has an empty segment (// or a trailing /)'],
    ['/docker/../system.slice', 'has a .. segment (a cgroup outside our cgroup namespace: run with the host cgroup namespace)'],
    ['/./docker', 'has a . segment'],
  ];
  for (const [parent, why] of notCanonical) {
    test(`cgroupParent ${parent} is refused: it ${why}`, () => refuses(flags({ cgroupParent: parent }), `command line: cgroupParent ${JSON.stringify(parent)} ${why}`));
  }
  test('cgroupRoot, the host\'s cgroup tree mounted into a container, comes from IMDS_GUARD_CGROUP_ROOT and must be absolute', () => {
    assert.equal(resolveConfig(layers({}, { IMDS_GUARD_CGROUP_ROOT: '/host/sys/fs/cgroup' }, {})).cgroupRoot, '/host/sys/fs/cgroup');
    refuses(layers({}, { IMDS_GUARD_CGROUP_ROOT: 'host/sys/fs/cgroup' }, {}), 'environment: cgroupRoot "host/sys/fs/cgroup" must be an absolute path without newlines');
    refuses(flags({ cgroupRoot: '/host\nx' }), 'command line: cgroupRoot "/host\\nx" must be an absolute path without newlines');
  });
  test('cgroupParent / is refused: a rule for the root cgroup would take the metadata from the host itself', () => {
    refuses(flags({ cgroupParent: '/' }), 'command line: cgroupParent "/" is the root cgroup: a rule for it would match the host\'s own processes too');
  });
});

describe('every other config error is one line naming the source, the key and the bad value', () => {
  const cases: readonly [string, ConfigLayer[], string][] = [
    ['an endpoint that is not an IP address', flags({ endpoints: ['169.254.169.999:80'] }), 'command line: endpoints[0] "169.254.169.999:80" has an address that is not an IP address: "169.254.169.999"'],
    ['an endpoint port 0', flags({ endpoints: ['169.254.169.254:0'] }), 'command line: endpoints[0] "169.254.169.254:0" has a port that is not 1-65535: "0"'],
    ['an endpoint port above 65535', layers({}, { IMDS_GUARD_ENDPOINTS: '169.254.169.254:65536' }, {}), 'environment: endpoints[0] "169.254.169.254:65536" has a port that is not 1-65535: "65536"'],
    ['an endpoint with a hostname', layers({ endpoints: ['metadata.google.internal:80'] }, {}, {}), `${FILE}: endpoints[0] "metadata.google.internal:80" has an address that is not an IP address: "metadata.google.internal"`],
    ['a target that is not a known form', flags({ target: 'drop' }), 'command line: target "drop" is not redirect, redirect:PORT or dnat:ADDRESS[:PORT]'],
    ['a redirect port 0', flags({ target: 'redirect:0' }), 'command line: target "redirect:0" has a redirect port that is not 1-65535'],
    ['a dnat address that is not an IP', flags({ target: 'dnat:1.1.1' }), 'command line: target "dnat:1.1.1" has a dnat address that is not an IP address: "1.1.1"'],
    ['a dnat port above 65535', flags({ target: 'dnat:1.1.1.1:70000' }), 'command line: target "dnat:1.1.1.1:70000" has a dnat port that is not 1-65535'],
    ['an IPv4 dnat target with IPv6 endpoints and no target6', layers({}, { IMDS_GUARD_TARGET: 'dnat:1.1.1.1' }, {}), 'environment: target "dnat:1.1.1.1" is a dnat to an IPv4 address, which cannot serve the IPv6 endpoints; set target6 (e.g. redirect)'],
    ['an IPv6 dnat target with IPv4 endpoints', flags({ target: 'dnat:[fd00::1]:80' }), 'command line: target "dnat:[fd00::1]:80" is an IPv6 address but IPv4 endpoints are configured; give an IPv4 target and set target6'],
    ['an IPv4 dnat as target6', layers({ target6: 'dnat:2.2.2.2' }, {}, {}), `${FILE}: target6 "dnat:2.2.2.2" must be redirect or an IPv6 dnat address`],
    ['an unknown key', layers({ interface: 'br-+' }, {}, {}), `${FILE}: interface "br-+" is not a known key`],
    ['several unknown keys', layers({ interface: 'br-+', target4: 'redirect' }, {}, {}), `${FILE}: interface "br-+" is not a known key (nor target4)`],
    ['a relative state directory', flags({ stateDir: 'var/lib/imds-guard' }), 'command line: stateDir "var/lib/imds-guard" must be an absolute path without newlines'],
    ['a relative DMI directory', flags({ dmiDir: 'dmi' }), 'command line: dmiDir "dmi" must be an absolute path without newlines'],
    ['a relative boot script directory from the environment', layers({}, { IMDS_GUARD_BOOT_SCRIPT_DIR: 'local.d' }, {}), 'environment: bootScriptDir "local.d" must be an absolute path without newlines'],
    ['a mode that does not exist', layers({ mode: 'audit' }, {}, {}), `${FILE}: mode "audit" Invalid option: expected one of "enforce"|"report"`],
    ['a lock wait that is not a number', layers({}, { IMDS_GUARD_LOCK_WAIT_SECONDS: 'soon' }, {}), 'environment: lockWaitSeconds "soon" Invalid input: expected number, received string'],
    ['an ssh:// Docker host (from DOCKER_HOST)', layers({}, { DOCKER_HOST: 'ssh://ops@docker-1' }, {}), `environment: dockerHost "ssh://ops@docker-1" must be unix:///PATH or tcp://HOST:PORT of this host's Docker (ssh:// is not supported)`],
    ['a boolean that is not one', layers({}, { IMDS_GUARD_DOCKER: 'maybe' }, {}), 'environment: docker "maybe" Invalid input: expected boolean, received string'],
    ['a cron second out of range (flag)', layers({}, {}, { driftSchedule: '61 * * * * *' }), 'command line: driftSchedule "61 * * * * *" is not a cron expression: Field value (61) is out of range'],
    ['a cron expression with seven fields (env)', layers({}, { IMDS_GUARD_DRIFT_SCHEDULE: '* * * * * * *' }, {}), 'environment: driftSchedule "* * * * * * *" is not a cron expression: Too many fields'],
    ['a cron step of zero', layers({ driftSchedule: '*/0 * * * * *' }, {}, {}), `${FILE}: driftSchedule "*/0 * * * * *" is not a cron expression: Field (second) has a step of zero`],
    ['a cron expression that parses but never fires (31 February)', layers({}, {}, { driftSchedule: '0 0 31 2 *' }), 'command line: driftSchedule "0 0 31 2 *" never fires (no date matches it within 8 years)'],
    ['a cron alias, which the character check refuses first', layers({}, {}, { driftSchedule: '@daily' }), 'command line: driftSchedule "@daily" must be a cron expression'],
    ['a Docker host that is not a URL', layers({}, {}, { dockerHost: 'tcp://[' }), 'command line: dockerHost "tcp://[" is not a URL'],
    ['a Docker host with a port above 65535', layers({}, { DOCKER_HOST: 'tcp://docker-1:70000' }, {}), 'environment: dockerHost "tcp://docker-1:70000" is not a URL'],
    ['a Docker host with port 0', layers({}, {}, { dockerHost: 'tcp://docker-1:0' }), 'command line: dockerHost "tcp://docker-1:0" has port 0; give a port from 1 to 65535'],
    ['a tcp Docker host without a host', layers({}, {}, { dockerHost: 'tcp:///var/run/docker.sock' }), 'command line: dockerHost "tcp:///var/run/docker.sock" must name a host (tcp://HOST:PORT)'],
    ['a tcp Docker host with a path', layers({}, {}, { dockerHost: 'tcp://docker-1:2375/v1.41' }), 'command line: dockerHost "tcp://docker-1:2375/v1.41" has a path, which a tcp:// Docker address cannot use'],
    ['a tcp Docker host with a user', layers({}, {}, { dockerHost: 'tcp://ops:secret@docker-1:2376' }), 'command line: dockerHost "tcp://ops:secret@docker-1:2376" has a user or password, which is not used: TLS comes from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH'],
    ['a unix Docker host with a relative path', layers({}, { DOCKER_HOST: 'unix://var/run/docker.sock' }, {}), 'environment: dockerHost "unix://var/run/docker.sock" must be unix:// followed by an absolute path (unix:///var/run/docker.sock)'],
    ['a unix Docker host without a path', layers({}, {}, { dockerHost: 'unix:///' }), 'command line: dockerHost "unix:///" must name a socket file (unix:///var/run/docker.sock)'],
    ['a unix Docker host with a %-escape', layers({}, {}, { dockerHost: 'unix:///run/docker%20x.sock' }), 'command line: dockerHost "unix:///run/docker%20x.sock" has a socket path with %, a NUL or a newline'],
    ['a Docker host with a query', layers({}, {}, { dockerHost: 'tcp://docker-1:2375?tls=1' }), 'command line: dockerHost "tcp://docker-1:2375?tls=1" has a query or fragment, which a Docker address cannot use'],
  ];
  for (const [what, input, message] of cases) test(what, () => refuses(input, message));
});
