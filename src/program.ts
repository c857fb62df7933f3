import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import type { Config } from './core/config.js';
import { coerce } from './core/config.js';
import { ExitCode, ImdsGuardError, describeError } from './errors.js';

/** Read where the module runs from: dist/cli.js and the start-up snapshot (src/snapshot.ts) are both in dist/, one level below package.json. */
const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

// Flags map onto config keys; only flags given on the command line override file and env.
const FLAG_KEYS: readonly [flag: string, key: string, kind: 'string' | 'list' | 'boolean' | 'number'][] = [
  ['mode', 'mode', 'string'],
  ['backend', 'backend', 'string'],
  ['allow', 'allow', 'list'],
  ['cloud', 'cloud', 'string'],
  ['notCoverable', 'notCoverable', 'string'],
  ['hostNetwork', 'hostNetwork', 'boolean'],
  ['hostNetworkExempt', 'hostNetworkExempt', 'list'],
  ['cgroupParent', 'cgroupParent', 'string'],
  ['cgroupRoot', 'cgroupRoot', 'string'],
  ['endpoints', 'endpoints', 'list'],
  ['target', 'target', 'string'],
  ['target6', 'target6', 'string'],
  ['bootScript', 'bootScript', 'string'],
  ['bootScriptDir', 'bootScriptDir', 'string'],
  ['openrcRoot', 'openrcRoot', 'string'],
  ['enableLocalService', 'enableLocalService', 'boolean'],
  ['stateDir', 'stateDir', 'string'],
  ['dockerHost', 'dockerHost', 'string'],
  ['docker', 'docker', 'boolean'],
  ['conntrack', 'conntrack', 'boolean'],
  ['lockWait', 'lockWaitSeconds', 'number'],
  ['writerLockWait', 'writerLockWaitSeconds', 'number'],
  ['logLevel', 'logLevel', 'string'],
  ['driftSchedule', 'driftSchedule', 'string'],
  ['metricsListen', 'metricsListen', 'string'],
  ['metricsTextfile', 'metricsTextfile', 'string'],
  ['probeSchedule', 'probeSchedule', 'string'],
];

function withConfigOptions(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'config file, YAML or JSON (default /etc/imds-guard/config.yaml; env IMDS_GUARD_CONFIG)')
    .addOption(new Option('--mode <mode>', 'enforce repairs; report only reports').choices(['enforce', 'report']))
    .addOption(new Option('--backend <backend>', 'iptables backend (default: detect where Docker\'s rules are)').choices(['auto', 'nft', 'legacy']))
    .option('--allow <list>', 'comma-separated interfaces whose forwarded traffic keeps access (exact names; default none: every interface is covered)')
    .addOption(new Option('--cloud <cloud>', "endpoint preset; auto detects the cloud from DMI (/sys/class/dmi/id), else 169.254.169.254:80 and [fd00:ec2::254]:80").choices(['auto', 'aws', 'gcp', 'azure', 'oci', 'openstack', 'alibaba', 'tencent', 'digitalocean']))
    .option('--endpoints <list>', 'comma-separated ADDRESS[:PORT], overriding the cloud preset (IPv6 in brackets: [fd00:ec2::254]:80)')
    .addOption(new Option('--not-coverable <verdict>', 'how a Docker network the host cannot cover (macvlan, ipvlan) is judged (default warn)').choices(['warn', 'fail']))
    .option('--no-host-network', 'do not cover host-network containers (filter OUTPUT, by cgroup)')
    .option('--host-network-exempt <list>', 'host-network containers (by name) that keep access; also: label imds-guard.allow=true')
    .option('--cgroup-parent <path>', "Docker's container cgroup parent, cgroup v2 path (default auto: /docker with the cgroupfs driver)")
    .option('--cgroup-root <dir>', "the host's /sys/fs/cgroup mounted at DIR (a container); default: the cgroup2 mount this process sees")
    .option('--target <target>', 'redirect, redirect:PORT or dnat:ADDRESS[:PORT] (default redirect: connection refused on the host)')
    .option('--target6 <target>', 'target for IPv6 endpoints (default: --target)')
    .addOption(new Option('--boot-script <policy>', 'write the OpenRC local.d script: auto = when its directory exists').choices(['auto', 'always', 'never']))
    .option('--boot-script-dir <dir>', 'directory of the boot script (default /etc/local.d)')
    .option('--openrc-root <dir>', 'OpenRC runlevels directory (default /etc/runlevels)')
    .option('--enable-local-service', "add OpenRC's local service to the default runlevel when it is missing")
    .option('--state-dir <dir>', 'agent state directory (default /var/lib/imds-guard)')
    .option('--docker-host <url>', 'Docker API, e.g. unix:///var/run/docker.sock (default: DOCKER_HOST or the local socket)')
    .option('--no-docker', 'do not ask Docker anything: the catch-all and FORWARD backstop still cover every forwarded path, the parent cgroup rule host-network containers under it; no per-container rules, no network report')
    .option('--no-conntrack', 'do not cut tracked connections to the endpoints after adding protection')
    .option('--drift-schedule <cron>', "cron expression (with seconds) of the agent's drift check (default */30 * * * * *)")
    .option('--metrics-listen <addr:port>', 'serve Prometheus metrics on ADDR:PORT (agent; off by default; suggested 127.0.0.1:9469)')
    .option('--metrics-textfile <path>', 'write node_exporter textfile metrics to PATH after each pass (agent; atomic)')
    .option('--probe-schedule <cron>', "cron expression (with seconds) of the agent's probe from inside containers (off by default)")
    .option('--lock-wait <seconds>', 'seconds to wait for the xtables lock (default 5)')
    .option('--writer-lock-wait <seconds>', 'seconds to wait while another apply, remove or agent pass of this network namespace is writing (default 30)')
    .addOption(new Option('--log-level <level>', 'log level (default info)').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']));
}

function flagValues(cmd: Command): Record<string, unknown> {
  const opts = cmd.opts<Record<string, unknown>>();
  const out: Record<string, unknown> = {};
  for (const [flag, key, kind] of FLAG_KEYS) {
    if (cmd.getOptionValueSource(flag) !== 'cli') continue;
    const v = opts[flag];
    out[key] = typeof v === 'string' ? coerce(v, kind) : v;
  }
  return out;
}

async function setup(cmd: Command, logFd: 1 | 2, overrides: Partial<Config> = {}) {
  const { loadConfig } = await import('./app/settings.js');
  const loaded = await loadConfig(cmd.opts<{ config?: string }>().config, flagValues(cmd), process.env);
  const config: Config = { ...loaded, ...overrides };
  const { createLogger } = await import('./shell/logger.js');
  // One-shot commands print their result on stdout; their logs go to stderr and say only what matters.
  const level = logFd === 2 && cmd.getOptionValueSource('logLevel') !== 'cli' && process.env.IMDS_GUARD_LOG_LEVEL === undefined ? 'warn' : config.logLevel;
  const log = await createLogger(level, logFd);
  const { realPorts } = await import('./app/wiring.js');
  return { config, log, ports: await realPorts(config, log) };
}

function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

export function buildProgram(): Command {
  const program = new Command('imds-guard')
    .description('Hides cloud instance metadata endpoints (169.254.169.254, ...) from every container on this host: whatever bridge, overlay or\nVM bridge it is on (nat PREROUTING catch-all, no rule per interface) and with --network host (filter OUTPUT, by cgroup).\nThe host\'s own processes keep their access. macvlan/ipvlan networks cannot be covered from the host and are reported.')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', '\nExit status: 0 protected/done, 1 not protected or drift found, 2 bad input, 3 could not apply.\nA table that could not be read is a failed check (IG-501): exit 1, never 0.');

  withConfigOptions(program.command('apply'))
    .description('bring the nat table (and boot script) to the protected state once; a converged host is not written')
    .addOption(new Option('--format <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (_o, cmd: Command) => {
      const { config, log, ports } = await setup(cmd, 2);
      const { cheapBackend, reconcile } = await import('./app/reconcile.js');
      const { hasDrift, needsOperator } = await import('./core/findings.js');
      const { summarizeApply } = await import('./app/summary.js');
      const { asOneWriter } = await import('./app/one-writer.js');
      // A converged host is confirmed from the deciding chains; anything else gets a full read.
      const result = await asOneWriter(config, { verb: 'apply', version: VERSION }, log, async () => {
        const cheap = await cheapBackend(config, ports);
        return reconcile(config, ports, cheap === null ? {} : { cheap: { backend: cheap, native: true } });
      });
      print(cmd.opts<{ format: string }>().format === 'json' ? JSON.stringify(summarizeApply(config, result, true), null, 2) : summarizeApply(config, result, false).text);
      const unprotected = config.mode === 'report' ? hasDrift(result.findings) || result.findings.some(needsOperator) : result.findings.some(needsOperator);
      process.exitCode = unprotected ? ExitCode.drift : ExitCode.ok;
    });

  withConfigOptions(program.command('audit'))
    .description('report, without changing anything, whether the host is protected and what drifted')
    .addOption(new Option('--format <format>', 'output format').choices(['text', 'json']).default('text'))
    .option('--probe', 'also connect to each endpoint from inside one running container of every Docker network (its network namespace; host-network ones from their cgroup); sends nothing, changes nothing, bounded to ~5 s')
    .action(async (_o, cmd: Command) => {
      const { config, ports } = await setup(cmd, 2, { mode: 'report' });
      const { audit } = await import('./app/audit.js');
      const { renderReportText } = await import('./core/report.js');
      const report = await audit(config, ports, VERSION, () => new Date(), { probe: cmd.opts<{ probe?: boolean }>().probe === true });
      print(cmd.opts<{ format: string }>().format === 'json' ? JSON.stringify(report, null, 2) : renderReportText(report));
      process.exitCode = report.protected ? ExitCode.ok : ExitCode.drift;
    });

  withConfigOptions(program.command('remove'))
    .description('delete exactly what imds-guard installed: the jump, the chain and the boot script')
    .action(async (_o, cmd: Command) => {
      const { config, log, ports } = await setup(cmd, 2);
      const { remove } = await import('./app/remove.js');
      const { asOneWriter } = await import('./app/one-writer.js');
      const r = await asOneWriter(config, { verb: 'remove', version: VERSION }, log, () => remove(config, ports));
      print(`imds-guard: removed (${r.restores} transaction(s)${r.bootScriptRemoved ? ', boot script deleted' : ''})`);
    });

  withConfigOptions(program.command('script'))
    .description('print the OpenRC local.d boot script for this host without writing it')
    .action(async (_o, cmd: Command) => {
      const { config, ports } = await setup(cmd, 2);
      const { bootScriptFor } = await import('./app/summary.js');
      print(await bootScriptFor(config, ports));
    });

  withConfigOptions(program.command('check-config'))
    .description('validate the configuration and exit (0 valid, 2 invalid)')
    .action(async (_o, cmd: Command) => {
      const { loadConfig } = await import('./app/settings.js');
      await loadConfig(cmd.opts<{ config?: string }>().config, flagValues(cmd), process.env);
      print('imds-guard: configuration is valid');
    });

  withConfigOptions(program.command('status'))
    .description("read the running agent's state file: exit 0 when its last pass succeeded recently")
    .option('--max-age <seconds>', 'how old the last successful pass may be', '120')
    .action(async (_o, cmd: Command) => {
      const { loadConfig } = await import('./app/settings.js');
      const config = await loadConfig(cmd.opts<{ config?: string }>().config, flagValues(cmd), process.env);
      const { agentStatus } = await import('./app/status.js');
      const s = await agentStatus(config, Number(cmd.opts<{ maxAge: string }>().maxAge), new Date());
      print(s.text);
      process.exitCode = s.ok ? ExitCode.ok : ExitCode.drift;
    });

  withConfigOptions(program.command('run'))
    .description('run the agent: reconcile now, on Docker network events and on the drift schedule; SIGHUP reloads, SIGTERM stops')
    .action(async (_o, cmd: Command) => {
      const { tuneV8ForResidentAgent } = await import('./shell/v8-tuning.js');
      tuneV8ForResidentAgent();
      const { runAgent } = await import('./app/agent.js');
      const { loadConfig } = await import('./app/settings.js');
      const configPath = cmd.opts<{ config?: string }>().config;
      const flags = flagValues(cmd);
      process.exit(await runAgent(() => loadConfig(configPath, flags, process.env), VERSION));
    });

  return program;
}

/**
 * The program with its errors thrown (not exited on) and printed as one line. Built once
 * per process: the start-up snapshot builds it at build time (src/snapshot.ts), which
 * nothing here forbids: construction reads no environment, terminal or file (commander
 * asks the terminal only when it prints, through `process`, as it runs).
 */
export function prepareProgram(): Command {
  const program = buildProgram();
  // One line, in the same form as every other error: "imds-guard: what", then the hint.
  const output = {
    outputError: (str: string, write: (s: string) => void) => write(`imds-guard: ${str.replace(/^error: /, '')}`),
  };
  program.exitOverride().configureOutput(output);
  for (const c of program.commands) c.exitOverride().configureOutput(output);
  return program;
}

export async function main(argv: string[], program: Command = prepareProgram()): Promise<number> {
  try {
    await program.parseAsync(argv);
    return Number(process.exitCode ?? 0);
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help' ? 0 : ExitCode.usage;
    }
    process.stderr.write(`imds-guard: ${describeError(e)}\n`);
    return e instanceof ImdsGuardError ? e.exitCode : ExitCode.applyFailed;
  }
}

