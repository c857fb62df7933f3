import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CronJob } from 'cron';
import { type ConfigLayer, configFromEnv, resolveConfig } from '../../src/core/config.js';
import { DEFAULT_DRIFT_SCHEDULE } from '../../src/core/schedule.js';
import { ConfigError } from '../../src/errors.js';

const FILE = 'config file /etc/imds-guard/config.yaml';
const layers = (file: Record<string, unknown>, env: Record<string, string>, flags: Record<string, unknown>): ConfigLayer[] => [
  { source: FILE, values: file },
  { source: 'environment', values: configFromEnv(env) },
  { source: 'command line', values: flags },
];

describe('resolveConfig layers', () => {
  test('with nothing set, the defaults protect both metadata endpoints on Docker bridges with a REDIRECT to port 1', () => {
    const c = resolveConfig(layers({}, {}, {}));
    assert.deepEqual(c, {
      mode: 'enforce',
      backend: 'auto',
      interfaces: ['docker0', 'docker_gwbridge', 'br-+'],
      endpoints: [
        { family: 'ipv4', address: '169.254.169.254', port: 80 },
        { family: 'ipv6', address: 'fd00:ec2::254', port: 80 },
      ],
      target: { kind: 'redirect', port: 1 },
      target6: { kind: 'redirect', port: 1 },
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
      ipset: 'auto',
      logLevel: 'info',
    });
  });

  test('the environment overrides the file, and typed values are coerced', () => {
    const c = resolveConfig(layers({ mode: 'enforce', interfaces: ['docker0'] }, { IMDS_GUARD_MODE: 'report', IMDS_GUARD_INTERFACES: ' br-+ , docker0,', IMDS_GUARD_DOCKER: 'false', IMDS_GUARD_LOCK_WAIT_SECONDS: '30' }, {}));
    assert.equal(c.mode, 'report');
    assert.deepEqual(c.interfaces, ['br-+', 'docker0']);
    assert.equal(c.docker, false);
    assert.equal(c.lockWaitSeconds, 30);
  });

  test('flags win over the environment and the file', () => {
    const c = resolveConfig(layers({ backend: 'nft', target: 'redirect:2' }, { IMDS_GUARD_BACKEND: 'nft', IMDS_GUARD_TARGET: 'redirect:3' }, { backend: 'legacy', target: 'redirect:4' }));
    assert.equal(c.backend, 'legacy');
    assert.deepEqual(c.target, { kind: 'redirect', port: 4 });
  });

  test('a bad value in the file is overridden by a good flag, so it does not count', () => {
    const c = resolveConfig(layers({ interfaces: ['bad name'] }, {}, { interfaces: ['docker0'] }));
    assert.deepEqual(c.interfaces, ['docker0']);
  });

  test('empty environment variables are ignored', () => {
    assert.deepEqual(configFromEnv({ IMDS_GUARD_MODE: '', IMDS_GUARD_INTERFACES: '' }), {});
  });

  const targets: readonly [string, Record<string, unknown>, unknown, unknown][] = [
    ['redirect', { target: 'redirect' }, { kind: 'redirect', port: 1 }, { kind: 'redirect', port: 1 }],
    ['redirect:8080', { target: 'redirect:8080' }, { kind: 'redirect', port: 8080 }, { kind: 'redirect', port: 8080 }],
    ['dnat:1.1.1.1 with target6 redirect', { target: 'dnat:1.1.1.1', target6: 'redirect' }, { kind: 'dnat', family: 'ipv4', address: '1.1.1.1', port: null }, { kind: 'redirect', port: 1 }],
    ['dnat:1.1.1.1:8080 with an IPv4 endpoint only', { target: 'dnat:1.1.1.1:8080', endpoints: ['169.254.169.254'] }, { kind: 'dnat', family: 'ipv4', address: '1.1.1.1', port: 8080 }, { kind: 'dnat', family: 'ipv4', address: '1.1.1.1', port: 8080 }],
    ['dnat:[fd00::1]:80 with an IPv6 endpoint only', { target: 'dnat:[fd00::1]:80', endpoints: ['[fd00:ec2::254]:80'] }, { kind: 'dnat', family: 'ipv6', address: 'fd00::1', port: 80 }, { kind: 'dnat', family: 'ipv6', address: 'fd00::1', port: 80 }],
    ['target6 dnat:[fd00::1]:8080', { target6: 'dnat:[fd00::1]:8080' }, { kind: 'redirect', port: 1 }, { kind: 'dnat', family: 'ipv6', address: 'fd00::1', port: 8080 }],
  ];
  for (const [form, flags, target, target6] of targets) {
    test(`target form ${form} is accepted`, () => {
      const c = resolveConfig(layers({}, {}, flags));
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

describe('every config error is one line naming the source, the key and the bad value', () => {
  const cases: readonly [string, ConfigLayer[], string][] = [
    ['an interface with a space (flag)', layers({}, {}, { interfaces: ['docker0', 'docker 1'] }), 'command line: interfaces[1] "docker 1" contains whitespace or a non-printable character'],
    ['an interface with a newline (env)', layers({}, { IMDS_GUARD_INTERFACES: 'dock\ner0' }, {}), 'environment: interfaces[0] "dock\\ner0" contains whitespace or a non-printable character'],
    ['an interface with a slash (file)', layers({ interfaces: ['br/0'] }, {}, {}), `${FILE}: interfaces[0] "br/0" contains a character the kernel or a shell script cannot take (/ : quote, backslash, $, !)`],
    ['an interface of 16 bytes', layers({}, {}, { interfaces: ['abcdefghijklmnop'] }), 'command line: interfaces[0] "abcdefghijklmnop" is longer than 15 bytes'],
    ['an interface of 15 ASCII bytes plus a 2-byte character', layers({}, {}, { interfaces: ['abcdefghijklmné'] }), 'command line: interfaces[0] "abcdefghijklmné" is longer than 15 bytes'],
    ["an interface with '+' in the middle", layers({}, {}, { interfaces: ['br+0'] }), "command line: interfaces[0] \"br+0\" may use '+' only as the last character"],
    ['an interface that is a shell substitution', layers({}, { IMDS_GUARD_INTERFACES: '$(reboot)' }, {}), 'environment: interfaces[0] "$(reboot)" contains a character the kernel or a shell script cannot take (/ : quote, backslash, $, !)'],
    ['an empty interface list', layers({ interfaces: [] }, {}, {}), `${FILE}: interfaces [] must name at least one interface`],
    ['an endpoint that is not an IP address', layers({}, {}, { endpoints: ['169.254.169.999:80'] }), 'command line: endpoints[0] "169.254.169.999:80" has an address that is not an IP address: "169.254.169.999"'],
    ['an endpoint port 0', layers({}, {}, { endpoints: ['169.254.169.254:0'] }), 'command line: endpoints[0] "169.254.169.254:0" has a port that is not 1-65535: "0"'],
    ['an endpoint port above 65535', layers({}, { IMDS_GUARD_ENDPOINTS: '169.254.169.254:65536' }, {}), 'environment: endpoints[0] "169.254.169.254:65536" has a port that is not 1-65535: "65536"'],
    ['an endpoint with a hostname', layers({ endpoints: ['metadata.google.internal:80'] }, {}, {}), `${FILE}: endpoints[0] "metadata.google.internal:80" has an address that is not an IP address: "metadata.google.internal"`],
    ['a target that is not a known form', layers({}, {}, { target: 'drop' }), 'command line: target "drop" is not redirect, redirect:PORT or dnat:ADDRESS[:PORT]'],
    ['a redirect port 0', layers({}, {}, { target: 'redirect:0' }), 'command line: target "redirect:0" has a redirect port that is not 1-65535'],
    ['a dnat address that is not an IP', layers({}, {}, { target: 'dnat:1.1.1' }), 'command line: target "dnat:1.1.1" has a dnat address that is not an IP address: "1.1.1"'],
    ['a dnat port above 65535', layers({}, {}, { target: 'dnat:1.1.1.1:70000' }), 'command line: target "dnat:1.1.1.1:70000" has a dnat port that is not 1-65535'],
    ['an IPv4 dnat target with IPv6 endpoints and no target6', layers({}, { IMDS_GUARD_TARGET: 'dnat:1.1.1.1' }, {}), 'environment: target "dnat:1.1.1.1" is a dnat to an IPv4 address, which cannot serve the IPv6 endpoints; set target6 (e.g. redirect)'],
    ['an IPv6 dnat target with IPv4 endpoints', layers({}, {}, { target: 'dnat:[fd00::1]:80' }), 'command line: target "dnat:[fd00::1]:80" is an IPv6 address but IPv4 endpoints are configured; give an IPv4 target and set target6'],
    ['an IPv4 dnat as target6', layers({ target6: 'dnat:2.2.2.2' }, {}, {}), `${FILE}: target6 "dnat:2.2.2.2" must be redirect or an IPv6 dnat address`],
    ['an unknown key', layers({ interface: 'br-+' }, {}, {}), `${FILE}: interface "br-+" is not a known key`],
    ['several unknown keys', layers({ interface: 'br-+', target4: 'redirect' }, {}, {}), `${FILE}: interface "br-+" is not a known key (nor target4)`],
    ['a relative state directory', layers({}, {}, { stateDir: 'var/lib/imds-guard' }), 'command line: stateDir "var/lib/imds-guard" must be an absolute path without newlines'],
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
  for (const [what, input, message] of cases) {
    test(what, () => {
      assert.throws(() => resolveConfig(input), (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.message, message);
        assert.equal(e.message.includes('\n'), false, 'one line');
        assert.equal(e.exitCode, 2);
        return true;
      });
    });
  }
});
