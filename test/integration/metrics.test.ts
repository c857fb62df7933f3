import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { PassSample } from '../../src/core/metrics-sample.js';
import { type MetricsServer, serveMetrics, writeTextfile } from '../../src/shell/metrics-export.js';
import { type Metrics, createMetrics } from '../../src/shell/metrics.js';
import { ListenError } from '../../src/errors.js';
import { REPO } from '../helpers/cli.js';
import { type RunningPrometheus, promToolsSkip, promtool, requireTools, startPrometheus } from '../helpers/prometheus.js';
import { waitFor } from '../helpers/swarm.js';

// The real parts: Debian's promtool and prometheus against what deploy/prometheus ships
// and what the agent's metrics server serves on 127.0.0.1. Nothing leaves loopback.
const skip = promToolsSkip();
const RULES = join(REPO, 'deploy', 'prometheus');

const pass = (families: PassSample['families']): PassSample => ({
  ok: true,
  durationSeconds: 0.02,
  at: new Date(),
  families,
  findings: [{ id: 'IG-101', severity: 'critical', status: families.every((f) => f.protected) ? 'pass' : 'fail' }],
  driftKinds: ['rule-missing'],
  repaired: true,
  networks: [{ coverage: 'interface' }, { coverage: 'set' }],
  hostContainers: [{ coverage: 'cgroup' }],
});
const BOTH_PROTECTED = pass([
  { family: 'ipv4', protected: true },
  { family: 'ipv6', protected: true },
]);
const V6_EXPOSED = pass([
  { family: 'ipv4', protected: true },
  { family: 'ipv6', protected: false },
]);

/** A metrics server on 127.0.0.1 with one pass and one probe run recorded. */
async function agentLike(sample: PassSample, connected: boolean): Promise<{ metrics: Metrics; server: MetricsServer; url: string }> {
  const metrics = createMetrics({ version: '0.1.0-test' });
  metrics.recordPass(sample);
  metrics.recordProbe(
    [
      { network: 'bridge', endpoint: '169.254.169.254:80', blocked: true },
      { network: 'lab-user', endpoint: '169.254.169.254:80', blocked: !connected },
    ],
    new Date(),
  );
  const server = await serveMetrics(metrics, { host: '127.0.0.1', port: 0 });
  return { metrics, server, url: `http://127.0.0.1:${server.address.port}/metrics` };
}

describe('the shipped alert rules', () => {
  test('promtool check rules accepts deploy/prometheus/alerts.yml', { skip }, () => {
    requireTools();
    const r = promtool(['check', 'rules', join(RULES, 'alerts.yml')]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /SUCCESS: 5 rules found/);
  });

  test('promtool test rules: each alert fires on an exposed host and stays quiet on a protected one', { skip }, () => {
    requireTools();
    const r = promtool(['test', 'rules', 'alerts.test.yml'], { cwd: RULES });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /SUCCESS/);
  });

  test('scrape-swarm.yml is a valid Prometheus configuration', { skip }, () => {
    requireTools();
    const r = promtool(['check', 'config', '--syntax-only', join(RULES, 'scrape-swarm.yml')]);
    assert.equal(r.code, 0, r.out);
  });
});

describe('the /metrics server on 127.0.0.1', () => {
  let agent: Awaited<ReturnType<typeof agentLike>>;
  before(async () => {
    agent = await agentLike(V6_EXPOSED, true);
  });
  after(async () => {
    await agent?.server.close();
  });

  test('GET /metrics answers 200 with the registry content type, and promtool check metrics finds nothing to lint in it', { skip }, async () => {
    requireTools();
    const r = await fetch(agent.url);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), agent.metrics.contentType);
    const text = await r.text();
    // promtool passes empty input too: make sure it read the real thing.
    assert.match(text, /^imds_guard_protected\{family="ipv6"\} 0$/m);
    assert.match(text, /^process_resident_memory_bytes \d+$/m);
    const check = promtool(['check', 'metrics'], { input: text });
    assert.equal(check.code, 0, check.out);
    assert.equal(check.out, '');
  });

  test('any other path or method is 404, and HEAD /metrics has headers only', async () => {
    const base = agent.url.replace(/\/metrics$/, '');
    assert.equal((await fetch(`${base}/`)).status, 404);
    assert.equal((await fetch(`${base}/metrics/x`)).status, 404);
    assert.equal((await fetch(agent.url, { method: 'POST', body: 'x' })).status, 404);
    assert.equal((await fetch(`${agent.url}?name[]=up`)).status, 200);
    const head = await fetch(agent.url, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
  });

  test('an address in use is a ListenError naming it, not a crash', async () => {
    const taken = agent.server.address;
    await assert.rejects(serveMetrics(agent.metrics, taken), (e: unknown) => e instanceof ListenError && e.message.includes(`127.0.0.1:${taken.port}`) && e.message.includes('EADDRINUSE'));
  });

  test('close() ends the server even with a keep-alive connection open', async () => {
    const extra = await agentLike(BOTH_PROTECTED, false);
    await fetch(extra.url, { headers: { connection: 'keep-alive' } }).then((r) => r.text());
    await extra.server.close();
    await assert.rejects(fetch(extra.url));
  });
});

describe('the node_exporter textfile', () => {
  test('writeTextfile writes exposition text that promtool accepts, without the process series', { skip }, async (t) => {
    requireTools();
    const dir = mkdtempSync(join(tmpdir(), 'imdsg-textfile-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const m = createMetrics({ version: '0.1.0-test' });
    m.recordPass(BOTH_PROTECTED);
    const path = join(dir, 'imds-guard.prom');
    await writeTextfile(m, path);
    const text = readFileSync(path, 'utf8');
    assert.match(text, /^imds_guard_protected\{family="ipv4"\} 1$/m);
    assert.doesNotMatch(text, /^process_/m);
    const check = promtool(['check', 'metrics'], { input: text });
    assert.equal(check.code, 0, check.out);
    assert.equal(check.out, '');
  });

  test('a reader polling the file while 200 writes land only ever sees a whole text, and no temp file is left behind', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'imdsg-textfile-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'imds-guard.prom');
    const m = createMetrics({ version: '0.1.0-test' });
    m.recordPass(BOTH_PROTECTED);
    await writeTextfile(m, path);
    let done = false;
    let reads = 0;
    const torn: string[] = [];
    const reader = (async () => {
      while (!done) {
        const text = readFileSync(path, 'utf8');
        reads++;
        // Every whole text ends with build_info's sample and a newline.
        if (!/imds_guard_build_info\{[^}]*\} 1\n$/.test(text)) torn.push(text.slice(-80));
        await new Promise((r) => setImmediate(r));
      }
    })();
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      // Texts of different lengths: a torn read of a longer one over a shorter one would show.
      m.recordProbe(Array.from({ length: i % 7 }, (_, j) => ({ network: `net-${j}-${'x'.repeat(i)}`, endpoint: '169.254.169.254:80', blocked: true })), new Date());
      m.recordPass(BOTH_PROTECTED);
      writes.push(writeTextfile(m, path));
      if (i % 10 === 0) await Promise.all(writes.splice(0));
    }
    await Promise.all(writes);
    done = true;
    await reader;
    assert.deepEqual(torn, []);
    assert.ok(reads > 10, `the reader read ${reads} times`);
    assert.deepEqual(readdirSync(dir), ['imds-guard.prom']);
  });
});

describe('a real Prometheus scrapes the metrics and evaluates the shipped rules', () => {
  let prom: RunningPrometheus | undefined;
  let exposed: Awaited<ReturnType<typeof agentLike>> | undefined;
  let protectedHost: Awaited<ReturnType<typeof agentLike>> | undefined;
  after(async () => {
    await prom?.stop();
    await exposed?.server.close();
    await protectedHost?.server.close();
  });

  test('up is 1 for both agents, their series are stored as served, and only the exposed host has alerts', { skip, timeout: 90_000 }, async (t) => {
    requireTools();
    exposed = await agentLike(V6_EXPOSED, true);
    protectedHost = await agentLike(BOTH_PROTECTED, false);
    const target = (a: { server: MetricsServer }): string => `127.0.0.1:${a.server.address.port}`;
    prom = await startPrometheus({
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      rule_files: [join(RULES, 'alerts.yml')],
      scrape_configs: [
        {
          job_name: 'imds-guard',
          static_configs: [
            { targets: [target(exposed)], labels: { host: 'exposed' } },
            { targets: [target(protectedHost)], labels: { host: 'protected' } },
          ],
        },
      ],
    });
    const p = prom;
    const up = await waitFor('two successful scrapes', 30_000, async () => {
      const r = await p.query('up{job="imds-guard"} == 1');
      return r.length === 2 ? r : undefined;
    }).catch((e: Error) => assert.fail(`${e.message}\n${p.log()}`));
    assert.deepEqual(up.map((s) => s.metric.host).sort(), ['exposed', 'protected']);

    const stored = await p.query('imds_guard_protected');
    assert.deepEqual(stored.map((s) => `${s.metric.host} ${s.metric.family} ${s.value[1]}`).sort(), ['exposed ipv4 1', 'exposed ipv6 0', 'protected ipv4 1', 'protected ipv6 1']);
    assert.equal((await p.query('imds_guard_build_info{version="0.1.0-test"}')).length, 2);

    // ProbeConnected fires at its first evaluation; HostExposed waits `for: 1m`, so pending
    // is the proof its expression matched. Nothing at all for the protected host.
    type Alert = { labels: Record<string, string>; state: string };
    const alerts = await waitFor('the exposed host\'s alerts', 30_000, async () => {
      const a = (await p.api<{ alerts: Alert[] }>('alerts')).alerts;
      const names = a.map((x) => `${x.labels.alertname} ${x.labels.host} ${x.state}`).sort();
      return names.includes('ImdsGuardProbeConnected exposed firing') && names.includes('ImdsGuardHostExposed exposed pending') ? names : undefined;
    });
    t.diagnostic(`alerts: ${alerts.join(', ')}`);
    assert.deepEqual(alerts, ['ImdsGuardHostExposed exposed pending', 'ImdsGuardProbeConnected exposed firing']);
  });
});
