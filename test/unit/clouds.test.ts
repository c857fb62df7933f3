import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLOUDS, type Cloud, detectCloud, DMI_FILES, isCloud, presetFor, resolveCloudEndpoints } from '../../src/core/clouds.js';
import { DEFAULT_ENDPOINTS, type Endpoint, parseEndpoint } from '../../src/core/endpoint.js';
import { DMI_VALUE_MAX, readDmi } from '../../src/shell/dmi.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'dmi');
const fixture = (name: string) => readDmi(join(FIXTURES, name));

const parsed = (text: string): Endpoint => {
  const e = parseEndpoint(text);
  assert.equal(typeof e, 'object', `${text} ${String(e)}`);
  return e as Endpoint;
};

describe('cloud presets', () => {
  for (const cloud of CLOUDS) {
    test(`${cloud}: every endpoint parses as ADDRESS[:PORT] and names its port`, () => {
      const preset = presetFor(cloud);
      assert.equal(preset.cloud, cloud);
      assert.ok(preset.endpoints.length > 0);
      assert.ok(preset.notes.length > 0);
      for (const text of preset.endpoints) {
        // An explicit port: a preset that leaned on the default of 80 would hide what it covers.
        assert.match(text, /:\d+$/, text);
        parsed(text);
      }
      assert.equal(new Set(preset.endpoints).size, preset.endpoints.length, 'no endpoint twice');
    });

    test(`${cloud}: keeps 169.254.169.254:80, so a wrong detection never opens it`, () => {
      assert.ok(presetFor(cloud).endpoints.includes('169.254.169.254:80'));
    });
  }

  test('aws is exactly the default, so a false AWS detection changes nothing', () => {
    assert.deepEqual(presetFor('aws').endpoints, DEFAULT_ENDPOINTS);
  });

  const expected: readonly [Cloud, string][] = [
    ['gcp', '169.254.169.254:8080'],
    ['gcp', '[fd20:ce::254]:80'],
    ['azure', '168.63.129.16:80'],
    ['azure', '168.63.129.16:32526'],
    ['oci', '[fd00:c1::a9fe:a9fe]:80'],
    ['alibaba', '100.100.100.200:80'],
    ['tencent', '169.254.0.23:80'],
  ];
  for (const [cloud, endpoint] of expected) {
    test(`${cloud} covers ${endpoint}`, () => assert.ok(presetFor(cloud).endpoints.includes(endpoint)));
  }

  test('no preset blocks DNS (GCE and Azure serve it on their metadata addresses)', () => {
    for (const cloud of CLOUDS) for (const text of presetFor(cloud).endpoints) assert.notEqual(parsed(text).port, 53, `${cloud} ${text}`);
  });

  test('openstack leaves out link-local fe80::a9fe:a9fe and says why', () => {
    const preset = presetFor('openstack');
    assert.ok(preset.endpoints.every((e) => parsed(e).family === 'ipv4'));
    assert.match(preset.notes, /fe80::a9fe:a9fe is link-local/);
  });

  test('isCloud knows the list and nothing else', () => {
    for (const cloud of CLOUDS) assert.ok(isCloud(cloud));
    for (const other of ['auto', 'AWS', 'ec2', '', 'aws ']) assert.equal(isCloud(other), false, other);
  });
});

describe('detectCloud from fixture DMI directories read through readDmi', () => {
  const cases: readonly [string, Cloud, RegExp][] = [
    ['aws', 'aws', /^sys_vendor is 'Amazon EC2', which starts with 'Amazon EC2'$/],
    ['aws-xen', 'aws', /^bios_version is '4\.11\.amazon', which contains 'amazon'$/],
    ['aws-uuid', 'aws', /^product_uuid is '45E12AEC-DCD1-B213-94ED-012345ABCDEF', which matches the EC2 pattern \(AWS calls/],
    ['gcp', 'gcp', /^product_name is 'Google Compute Engine'$/],
    ['azure', 'azure', /^chassis_asset_tag is '7783-7084-3265-9085-8269-3286-77'$/],
    ['hyperv', 'azure', /^sys_vendor is 'Microsoft Corporation' and product_name is 'Virtual Machine' \(a Hyper-V VM outside Azure/],
    ['oci', 'oci', /^chassis_asset_tag is 'OracleCloud\.com'$/],
    ['openstack', 'openstack', /^product_name is 'OpenStack Nova'$/],
    ['alibaba', 'alibaba', /^product_name is 'Alibaba Cloud ECS'$/],
    ['tencent', 'tencent', /^sys_vendor is 'Tencent Cloud'$/],
    ['digitalocean', 'digitalocean', /^sys_vendor is 'DigitalOcean'$/],
  ];
  for (const [dir, cloud, reason] of cases) {
    test(`${dir}/ is ${cloud}, and the reason names the file and value that decided`, async () => {
      const got = detectCloud(await fixture(dir));
      assert.equal(got.cloud, cloud);
      assert.match(got.reason, reason);
    });
  }

  test('a plain KVM/QEMU guest is no cloud, and the reason lists what was seen', async () => {
    const got = detectCloud(await fixture('kvm'));
    assert.equal(got.cloud, null);
    assert.equal(
      got.reason,
      "no known cloud's DMI signature matched (sys_vendor is 'QEMU', product_name is 'Standard PC (Q35 + ICH9, 2009)', " +
        "bios_vendor is 'SeaBIOS', bios_version is '1.16.2-debian-1.16.2-1')",
    );
  });

  test('a host without DMI is no cloud, and the reason says nothing could be read', async () => {
    const got = detectCloud(await readDmi(join(FIXTURES, 'no-such-dir')));
    assert.deepEqual(got, { cloud: null, reason: 'no DMI file could be read, so no cloud signature could match' });
  });

  test('an asset tag outranks vendor strings (an OCI VM says QEMU everywhere else)', () => {
    assert.equal(detectCloud({ sys_vendor: 'QEMU', product_name: 'KVM', chassis_asset_tag: 'OracleCloud.com' }).cloud, 'oci');
  });

  test('signatures are exact: a look-alike product name is not GCE', () => {
    assert.equal(detectCloud({ product_name: 'Google Compute Engine Emulator' }).cloud, null);
    assert.equal(detectCloud({ sys_vendor: 'Microsoft Corporation' }).cloud, null);
  });

  test('a value with a quote or odd characters is shown escaped in the reason', () => {
    const got = detectCloud({ sys_vendor: "it's QEMU" });
    assert.match(got.reason, /sys_vendor is "it's QEMU"/);
  });
});

describe('readDmi', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'imdsg-dmi-'));
    await writeFile(join(dir, 'sys_vendor'), '  Amazon EC2 \n');
    await writeFile(join(dir, 'product_name'), Buffer.from([0x6d, 0x35, 0x00, 0x0a])); // NUL inside
    await writeFile(join(dir, 'bios_vendor'), 'Amaz\u00f3n\n'); // not ASCII
    await writeFile(join(dir, 'bios_version'), `${'x'.repeat(DMI_VALUE_MAX + 1)}\n`);
    await writeFile(join(dir, 'board_vendor'), `${'y'.repeat(DMI_VALUE_MAX)}\n`);
    await writeFile(join(dir, 'board_asset_tag'), '\n'); // empty, as unset tags often are
    await mkdir(join(dir, 'chassis_asset_tag')); // a directory where a file should be
    await writeFile(join(dir, 'target'), 'OracleCloud.com\n');
    await symlink(join(dir, 'target'), join(dir, 'product_uuid')); // a planted symlink is not DMI
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  test('trims, keeps printable values up to the cap, and drops everything else', async () => {
    assert.deepEqual(await readDmi(dir), { sys_vendor: 'Amazon EC2', board_vendor: 'y'.repeat(DMI_VALUE_MAX) });
  });

  test('reads only the files detection needs', async () => {
    const facts = await fixture('kvm');
    assert.equal(facts['product_version'], undefined);
    for (const key of Object.keys(facts)) assert.ok((DMI_FILES as readonly string[]).includes(key), key);
  });

  test('a FIFO in place of a file does not hang the read', async () => {
    const fifoDir = await mkdtemp(join(tmpdir(), 'imdsg-dmi-fifo-'));
    try {
      execFileSync('mkfifo', [join(fifoDir, 'sys_vendor')]);
      await writeFile(join(fifoDir, 'product_name'), 'Droplet\n');
      assert.deepEqual(await readDmi(fifoDir), { product_name: 'Droplet' });
    } finally {
      await rm(fifoDir, { recursive: true, force: true });
    }
  });
});

describe('resolveCloudEndpoints', () => {
  const aws = { sys_vendor: 'Amazon EC2' };
  const kvm = { sys_vendor: 'QEMU' };

  test('a configured cloud wins, whatever DMI says', () => {
    const got = resolveCloudEndpoints('gcp', null);
    assert.deepEqual(got, { cloud: 'gcp', chosen: 'configured', reason: 'cloud: gcp is set in the config', endpoints: presetFor('gcp').endpoints });
  });

  test('a configured cloud that DMI contradicts is kept, and the reason says DMI disagrees', () => {
    const got = resolveCloudEndpoints('gcp', aws);
    assert.equal(got.cloud, 'gcp');
    assert.equal(got.chosen, 'configured');
    assert.equal(got.reason, "cloud: gcp is set in the config (DMI points at aws: sys_vendor is 'Amazon EC2', which starts with 'Amazon EC2')");
  });

  test('a configured cloud that DMI confirms says nothing more', () => {
    assert.equal(resolveCloudEndpoints('aws', aws).reason, 'cloud: aws is set in the config');
  });

  test('auto picks the detected preset and says why', async () => {
    const got = resolveCloudEndpoints('auto', await fixture('azure'));
    assert.equal(got.cloud, 'azure');
    assert.equal(got.chosen, 'detected');
    assert.deepEqual(got.endpoints, presetFor('azure').endpoints);
    assert.equal(got.reason, "cloud: auto detected azure: chassis_asset_tag is '7783-7084-3265-9085-8269-3286-77'");
  });

  test('auto on a host that is no cloud falls back to the default endpoints', () => {
    const got = resolveCloudEndpoints('auto', kvm);
    assert.equal(got.cloud, null);
    assert.equal(got.chosen, 'default');
    assert.deepEqual(got.endpoints, DEFAULT_ENDPOINTS);
    assert.equal(got.reason, "cloud: auto found no cloud: no known cloud's DMI signature matched (sys_vendor is 'QEMU'); using the default endpoints");
  });

  test('auto without DMI falls back to the default endpoints', () => {
    assert.deepEqual(resolveCloudEndpoints('auto', null), {
      cloud: null,
      chosen: 'default',
      reason: 'cloud: auto, but DMI was not read; using the default endpoints',
      endpoints: DEFAULT_ENDPOINTS,
    });
  });
});
