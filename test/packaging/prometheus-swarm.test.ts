// deploy/prometheus/scrape-swarm.yml, for real: Debian's Prometheus runs the shipped
// scrape job against the lab's Swarm (dockerd 20.10, scripts/lab) and scrapes what it
// discovers. A global service on the host network stands for the agent (Swarm's view of
// a task does not depend on what runs in it); the metrics are served by this process.
//
// Safety: Prometheus reads the lab's Docker API through the lab's unix socket and
// listens on 127.0.0.1; the lab's Swarm advertises 127.0.0.1, so the one target it
// discovers is on this machine's loopback too. Nothing leaves the machine.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parse } from 'yaml';
import { type MetricsServer, serveMetrics } from '../../src/shell/metrics-export.js';
import { createMetrics } from '../../src/shell/metrics.js';
import { capability, requireCapabilities, skipWithout } from '../helpers/capability.js';
import { REPO } from '../helpers/cli.js';
import { type Lab, labAvailable, startLab } from '../helpers/lab.js';
import { type RunningPrometheus, freeLoopbackPort, promToolsSkip, requireTools, startPrometheus } from '../helpers/prometheus.js';
import { waitFor } from '../helpers/swarm.js';

const LAB_NAME = 'promswarm';
const SERVICE = 'igmetrics';
// On the lab's overlay network: the tasks role does find a task with an address, so an
// empty result for SERVICE is about the host network, not a tasks role that is not working.
const CONTROL = 'igmetrics-overlay';
const SCRAPE_FILE = join(REPO, 'deploy/prometheus/scrape-swarm.yml');

const lab0 = labAvailable();
const needsLab = capability('the lab', lab0.ok, lab0.why ?? 'the lab cannot run here');
// promToolsSkip is false under CI=true; requireTools then fails the test.
const skip = skipWithout(needsLab) || promToolsSkip();

let lab: Lab | undefined;
let server: MetricsServer | undefined;
let prom: RunningPrometheus | undefined;

before(async () => {
  if (skip !== false) return;
  requireCapabilities(needsLab);
  lab = await startLab(LAB_NAME);
});

after(async () => {
  await prom?.stop();
  await server?.close();
  await lab?.down();
});

interface ScrapeJob {
  job_name: string;
  scrape_interval?: string;
  dockerswarm_sd_configs: { host: string; role: string; port: number; refresh_interval?: string }[];
  relabel_configs?: unknown[];
}

interface Target {
  labels: Record<string, string>;
  discoveredLabels: Record<string, string>;
  scrapePool: string;
  health: string;
  lastError: string;
}

test('the shipped Swarm job finds the node of a host-network global service, scrapes it (up == 1) and names it by hostname; role tasks finds nothing there', { skip, timeout: 180_000 }, async (t) => {
  requireTools();
  assert.ok(lab, 'the lab did not come up');
  const l = lab;
  const node = await l.docker(['node', 'inspect', 'self', '--format', '{{.Status.Addr}} {{.Description.Hostname}}']);
  assert.equal(node.code, 0, node.stderr);
  const [nodeAddr = '', hostname = ''] = node.stdout.trim().split(' ');
  assert.equal(nodeAddr, '127.0.0.1', 'the lab advertises its Swarm on 127.0.0.1; any other address must not be scraped from here');

  for (const [name, network] of [[SERVICE, 'host'], [CONTROL, 'lab-overlay']] as const) {
    const created = await l.docker(['service', 'create', '--detach', '--name', name, '--mode', 'global', '--network', network, 'imdsg-busybox:latest', 'sleep', '3600'], { timeoutMs: 60_000 });
    assert.equal(created.code, 0, created.stderr);
    await waitFor(`the ${name} task running`, 60_000, async () => {
      const ps = await l.docker(['service', 'ps', name, '--filter', 'desired-state=running', '--format', '{{.CurrentState}}']);
      return /^Running/m.test(ps.stdout) ? true : undefined;
    });
  }

  // The shipped job as it is, but for where the lab's API is, a free port instead of
  // 9469 (which something else here might hold) and second-scale intervals.
  const port = await freeLoopbackPort();
  const metrics = createMetrics({ version: '0.1.0-swarm' });
  metrics.recordPass({ ok: true, durationSeconds: 0.01, at: new Date(), families: [{ family: 'ipv4', protected: true }], findings: [], driftKinds: [], repaired: false, networks: [], hostContainers: [] });
  server = await serveMetrics(metrics, { host: '127.0.0.1', port });
  const shipped = parse(readFileSync(SCRAPE_FILE, 'utf8')) as { scrape_configs: ScrapeJob[] };
  const job = shipped.scrape_configs[0];
  assert.ok(job !== undefined && job.job_name === 'imds-guard');
  const sd = job.dockerswarm_sd_configs[0];
  assert.ok(sd !== undefined && sd.role === 'nodes' && sd.port === 9469);
  const nodesJob: ScrapeJob = { ...job, scrape_interval: '1s', dockerswarm_sd_configs: [{ ...sd, host: l.dockerHost, port, refresh_interval: '1s' }] };
  // What the brief of a global service suggests first, kept here as the proof it finds nothing.
  const tasksJob: ScrapeJob = { job_name: 'tasks-role', scrape_interval: '1s', dockerswarm_sd_configs: [{ host: l.dockerHost, role: 'tasks', port, refresh_interval: '1s' }] };
  prom = await startPrometheus({ scrape_configs: [nodesJob, tasksJob] });
  const p = prom;

  const up = await waitFor('up{job="imds-guard"} == 1', 60_000, async () => {
    const r = await p.query('up{job="imds-guard"}');
    return r.length === 1 && r[0]?.value[1] === '1' ? r[0] : undefined;
  }).catch((e: Error) => assert.fail(`${e.message}\n${p.log()}`));
  assert.equal(up.metric.instance, hostname);
  assert.ok(up.metric.swarm_node_id !== undefined && up.metric.swarm_node_id !== '');
  const info = await p.query('imds_guard_build_info{version="0.1.0-swarm"}');
  assert.equal(info.length, 1);
  assert.equal(info[0]?.metric.instance, hostname);

  type Targets = { activeTargets: Target[]; droppedTargets: Target[] };
  const targets = await waitFor('the tasks role to find the overlay task', 30_000, async () => {
    const all = await p.api<Targets>('targets?state=any');
    return all.activeTargets.some((x) => x.scrapePool === 'tasks-role') ? all : undefined;
  });
  const ours = targets.activeTargets.filter((x) => x.scrapePool === 'imds-guard');
  assert.deepEqual(ours.map((x) => `${x.discoveredLabels.__address__} ${x.health}`), [`127.0.0.1:${port} up`]);
  const fromTasks = [...targets.activeTargets, ...targets.droppedTargets].filter((x) => x.scrapePool === 'tasks-role').map((x) => x.discoveredLabels.__meta_dockerswarm_service_name);
  t.diagnostic(`role tasks discovered targets of: ${fromTasks.join(', ')}`);
  assert.deepEqual(fromTasks, [CONTROL]);
});
