import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { PassSample } from '../../src/core/metrics-sample.js';
import { parseMetricsListen, parseMetricsTextfile } from '../../src/core/metrics-settings.js';
import { createMetrics } from '../../src/shell/metrics.js';
import { writeTextfile } from '../../src/shell/metrics-export.js';

/** The samples of an exposition text, `name{labels}` -> value, in the order printed. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

const named = (all: Map<string, number>, prefix: string): [string, number][] => [...all].filter(([k]) => k === prefix || k.startsWith(`${prefix}{`));

const AT = new Date('2024-05-01T12:00:00.250Z');

const protectedPass = (over: Partial<PassSample> = {}): PassSample => ({
  ok: true,
  durationSeconds: 0.012,
  at: AT,
  families: [
    { family: 'ipv4', protected: true },
    { family: 'ipv6', protected: true },
  ],
  findings: [
    { id: 'IG-101', severity: 'critical', status: 'pass' },
    { id: 'IG-101', severity: 'critical', status: 'pass' },
    { id: 'IG-502', severity: 'info', status: 'info' },
  ],
  driftKinds: [],
  repaired: false,
  networks: [{ coverage: 'interface' }, { coverage: 'interface' }, { coverage: 'set' }],
  hostContainers: [{ coverage: 'cgroup' }],
  ...over,
});

describe('metrics after recordPass', () => {
  test('a protected pass shows each family as 1, findings counted per id/severity/status, networks and host containers by coverage, and the pass time', async () => {
    const m = createMetrics({ version: '1.2.3' });
    m.recordPass(protectedPass());
    const s = samples(await m.scrape());
    assert.deepEqual(named(s, 'imds_guard_protected'), [
      ['imds_guard_protected{family="ipv4"}', 1],
      ['imds_guard_protected{family="ipv6"}', 1],
    ]);
    assert.deepEqual(named(s, 'imds_guard_findings'), [
      ['imds_guard_findings{id="IG-101",severity="critical",status="pass"}', 2],
      ['imds_guard_findings{id="IG-502",severity="info",status="info"}', 1],
    ]);
    assert.deepEqual(named(s, 'imds_guard_docker_networks'), [
      ['imds_guard_docker_networks{coverage="interface"}', 2],
      ['imds_guard_docker_networks{coverage="set"}', 1],
    ]);
    assert.deepEqual(named(s, 'imds_guard_host_network_containers'), [['imds_guard_host_network_containers{coverage="cgroup"}', 1]]);
    assert.equal(s.get('imds_guard_last_successful_pass_timestamp_seconds'), 1714564800.25);
    assert.equal(s.get('imds_guard_pass_duration_seconds_bucket{le="0.025"}'), 1);
    assert.equal(s.get('imds_guard_pass_duration_seconds_bucket{le="0.01"}'), 0);
    assert.equal(s.get('imds_guard_pass_duration_seconds_count'), 1);
    assert.equal(s.get('imds_guard_passes_total{result="ok"}'), 1);
    assert.equal(s.get('imds_guard_passes_total{result="error"}'), 0);
    assert.equal(s.get('imds_guard_repairs_total'), 0);
  });

  test('an exposed family is 0, and every metric carries HELP and TYPE with the imds_guard_ prefix', async () => {
    const m = createMetrics({ version: '1.2.3' });
    m.recordPass(protectedPass({ families: [{ family: 'ipv4', protected: true }, { family: 'ipv6', protected: false }] }));
    const text = await m.textfile();
    assert.equal(samples(text).get('imds_guard_protected{family="ipv6"}'), 0);
    const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((x) => `${x[1]} ${x[2]}`);
    assert.deepEqual(types, [
      'imds_guard_protected gauge',
      'imds_guard_findings gauge',
      'imds_guard_drift_events_total counter',
      'imds_guard_repairs_total counter',
      'imds_guard_passes_total counter',
      'imds_guard_pass_duration_seconds histogram',
      'imds_guard_last_successful_pass_timestamp_seconds gauge',
      'imds_guard_docker_networks gauge',
      'imds_guard_host_network_containers gauge',
      'imds_guard_probe_blocked gauge',
      'imds_guard_probe_last_run_timestamp_seconds gauge',
      'imds_guard_build_info gauge',
    ]);
    assert.equal([...text.matchAll(/^# HELP imds_guard_\S+ \S/gm)].length, types.length);
  });

  test('a finding, a network or a family gone in the next pass is gone from the gauges', async () => {
    const m = createMetrics({ version: '1.2.3' });
    m.recordPass(protectedPass({ findings: [{ id: 'IG-201', severity: 'high', status: 'fail' }], driftKinds: ['jump-missing'], repaired: true }));
    m.recordPass(protectedPass({ families: [{ family: 'ipv4', protected: true }], findings: [{ id: 'IG-101', severity: 'critical', status: 'pass' }], networks: [{ coverage: 'set' }], hostContainers: [] }));
    const s = samples(await m.scrape());
    assert.deepEqual(named(s, 'imds_guard_findings'), [['imds_guard_findings{id="IG-101",severity="critical",status="pass"}', 1]]);
    assert.deepEqual(named(s, 'imds_guard_protected'), [['imds_guard_protected{family="ipv4"}', 1]]);
    assert.deepEqual(named(s, 'imds_guard_docker_networks'), [['imds_guard_docker_networks{coverage="set"}', 1]]);
    assert.deepEqual(named(s, 'imds_guard_host_network_containers'), []);
  });

  test('drift events, repairs and passes only grow: each pass adds to them and none takes away', async () => {
    const m = createMetrics({ version: '1.2.3' });
    const seen: number[][] = [];
    const passes: Partial<PassSample>[] = [
      { driftKinds: ['rule-missing', 'rule-missing'], repaired: true },
      { driftKinds: [], repaired: false },
      { driftKinds: ['jump-missing'], repaired: true },
      { ok: false, driftKinds: [], repaired: false },
    ];
    for (const p of passes) {
      m.recordPass(protectedPass(p));
      const s = samples(await m.scrape());
      seen.push([
        s.get('imds_guard_drift_events_total{kind="rule-missing"}') ?? 0,
        s.get('imds_guard_drift_events_total{kind="jump-missing"}') ?? 0,
        s.get('imds_guard_repairs_total') ?? -1,
        s.get('imds_guard_passes_total{result="ok"}') ?? -1,
        s.get('imds_guard_passes_total{result="error"}') ?? -1,
        s.get('imds_guard_pass_duration_seconds_count') ?? -1,
      ]);
    }
    assert.deepEqual(seen, [
      [2, 0, 1, 1, 0, 1],
      [2, 0, 1, 2, 0, 2],
      [2, 1, 2, 3, 0, 3],
      [2, 1, 2, 3, 1, 4],
    ]);
  });

  test('a failed pass keeps the last known state and its time, so the age of the last success is what tells', async () => {
    const m = createMetrics({ version: '1.2.3' });
    m.recordPass(protectedPass());
    m.recordPass(protectedPass({ ok: false, at: new Date(AT.getTime() + 60_000), families: [], findings: [], networks: [] }));
    const s = samples(await m.scrape());
    assert.equal(s.get('imds_guard_last_successful_pass_timestamp_seconds'), 1714564800.25);
    assert.equal(named(s, 'imds_guard_protected').length, 2);
    assert.equal(named(s, 'imds_guard_findings').length, 2);
  });

  test('before any pass the last successful pass time is 0 (never), and build_info names the version and node', async () => {
    const m = createMetrics({ version: '1.2.3' });
    const s = samples(await m.scrape());
    assert.equal(s.get('imds_guard_last_successful_pass_timestamp_seconds'), 0);
    assert.equal(s.get(`imds_guard_build_info{version="1.2.3",node_version="${process.versions.node}"}`), 1);
  });
});

describe('metrics after recordProbe', () => {
  test('each network and endpoint is 1 when blocked and 0 when connected; a pair connected once in a run is 0', async () => {
    const m = createMetrics({ version: '1.2.3' });
    const at = new Date('2024-05-01T12:01:00Z');
    m.recordProbe(
      [
        { network: 'bridge', endpoint: '169.254.169.254:80', blocked: true },
        { network: 'bridge', endpoint: '[fd00:ec2::254]:80', blocked: true },
        { network: 'lab-user', endpoint: '169.254.169.254:80', blocked: false },
        { network: 'lab-user', endpoint: '169.254.169.254:80', blocked: true },
      ],
      at,
    );
    const s = samples(await m.scrape());
    assert.deepEqual(named(s, 'imds_guard_probe_blocked'), [
      ['imds_guard_probe_blocked{network="bridge",endpoint="169.254.169.254:80"}', 1],
      ['imds_guard_probe_blocked{network="bridge",endpoint="[fd00:ec2::254]:80"}', 1],
      ['imds_guard_probe_blocked{network="lab-user",endpoint="169.254.169.254:80"}', 0],
    ]);
    assert.equal(s.get('imds_guard_probe_last_run_timestamp_seconds'), 1714564860);
  });

  test('a network gone from the next probe run is gone from the gauge, and a Docker name with quotes is escaped', async () => {
    const m = createMetrics({ version: '1.2.3' });
    m.recordProbe([{ network: 'old', endpoint: '169.254.169.254:80', blocked: true }], AT);
    m.recordProbe([{ network: 'a"b\\c\nd', endpoint: '169.254.169.254:80', blocked: true }], AT);
    const text = await m.textfile();
    assert.doesNotMatch(text, /network="old"/);
    assert.match(text, /^imds_guard_probe_blocked\{network="a\\"b\\\\c\\nd",endpoint="169\.254\.169\.254:80"\} 1$/m);
  });
});

describe('scrape and textfile', () => {
  test('the scrape adds the process series; the textfile leaves them to node_exporter, which has its own', async () => {
    const m = createMetrics({ version: '1.2.3' });
    const scraped = samples(await m.scrape());
    const file = samples(await m.textfile());
    for (const name of ['process_resident_memory_bytes', 'process_cpu_seconds_total', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes']) {
      assert.ok((scraped.get(name) ?? 0) > 0, name);
      assert.equal(file.has(name), false, name);
    }
    assert.match(m.contentType, /^text\/plain; version=0\.0\.4/);
  });

  test('with processMetrics false the scrape is the imds-guard metrics alone', async () => {
    const m = createMetrics({ version: '1.2.3', processMetrics: false });
    assert.equal(await m.scrape(), await m.textfile());
  });

  test('writeTextfile hands the textfile text to an atomic write with mode 0644, one write at a time per path', async () => {
    const m = createMetrics({ version: '1.2.3' });
    const writes: { path: string; mode: number; lines: number }[] = [];
    let inFlight = 0;
    let most = 0;
    const files = {
      async writeAtomic(path: string, content: string, mode: number) {
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setTimeout(r, 5));
        writes.push({ path, mode, lines: content.split('\n').length });
        inFlight--;
      },
    };
    await Promise.all([writeTextfile(m, '/x/a.prom', files), writeTextfile(m, '/x/a.prom', files), writeTextfile(m, '/x/a.prom', files)]);
    assert.equal(writes.length, 3);
    assert.equal(most, 1);
    assert.ok(writes.every((w) => w.path === '/x/a.prom' && w.mode === 0o644 && w.lines > 10));
  });
});

describe('metrics settings', () => {
  const listen: [string, unknown][] = [
    ['127.0.0.1:9469', { host: '127.0.0.1', port: 9469 }],
    ['0.0.0.0:9469', { host: '0.0.0.0', port: 9469 }],
    ['[::1]:9469', { host: '::1', port: 9469 }],
    ['[0:0:0:0:0:0:0:1]:9469', { host: '::1', port: 9469 }],
    ['[::]:1', { host: '::', port: 1 }],
  ];
  for (const [text, want] of listen) {
    test(`--metrics-listen ${text} is accepted`, () => assert.deepEqual(parseMetricsListen(text), want));
  }
  const badListen: [string, RegExp][] = [
    ['127.0.0.1', /is not ADDRESS:PORT .*127\.0\.0\.1:9469/],
    ['9469', /is not ADDRESS:PORT/],
    [':9469', /is not ADDRESS:PORT/],
    ['::1:9469', /is not ADDRESS:PORT/],
    ['localhost:9469', /not an IP address: "localhost"/],
    ['[127.0.0.1]:9469', /IPv4 address in brackets/],
    ['[::1]:0', /port that is not 1-65535: "0"/],
    ['127.0.0.1:65536', /port that is not 1-65535/],
    ['127.0.0.1:', /port that is not 1-65535: ""/],
    ['127.0.0.1:94x', /port that is not 1-65535/],
    ['[::1]9469', /is not ADDRESS:PORT/],
  ];
  for (const [text, why] of badListen) {
    test(`--metrics-listen ${JSON.stringify(text)} is refused with a reason`, () => {
      const r = parseMetricsListen(text);
      assert.equal(typeof r, 'string');
      assert.match(r as string, why);
    });
  }

  test('--metrics-textfile takes an absolute *.prom path and refuses others with a reason', () => {
    assert.deepEqual(parseMetricsTextfile('/var/lib/node_exporter/textfile_collector/imds-guard.prom'), { path: '/var/lib/node_exporter/textfile_collector/imds-guard.prom' });
    assert.match(parseMetricsTextfile('imds-guard.prom') as string, /absolute/);
    assert.match(parseMetricsTextfile('/var/lib/x/') as string, /a file, not a directory/);
    assert.match(parseMetricsTextfile('/var/lib/x/imds-guard.txt') as string, /\.prom/);
    assert.match(parseMetricsTextfile('/var/lib/x\n.prom') as string, /newline/);
  });
});
