#!/usr/bin/env node
// The smtp-pushback command: `serve` runs the proxy, `check-config` validates a policy file, `check-upstream`
// asks Postfix whether it is ready for the proxy; the others read a running proxy or offline data.
import { Command, InvalidArgumentError } from 'commander';
import { defaultPolicy, formatProblem, loadPolicyFile, type PolicyResult } from '../config/load.js';
import { formatHostPort } from '../util/host-port.js';
import { registerCheckUpstreamCommand } from './check-upstream-command.js';
import { runEntropyCommand } from './entropy-command.js';
import { fetchStatus, formatStatus } from './status-command.js';
import { registerQuarantineCommands } from './quarantine-command.js';
import { registerSfdsCommand } from './sfds-command.js';
import { fetchTopSources, formatTopSources } from './top-command.js';
import { terminalSafe } from './terminal-safe.js';
import { createLogger } from '../log.js';
import { defaultLogFormat, type LogFormat } from '../log-pretty.js';
import { startProxy } from '../main.js';

const program = new Command();
program
  .name('smtp-pushback')
  .description('SMTP front proxy for Postfix: relays mail live, watches command/response pairs, pushes back on floods.')
  .version('0.1.0');

program
  .command('serve', { isDefault: true })
  .description('run the proxy (built-in defaults unless --config or PUSHBACK_POLICY names a policy file)')
  .option('-c, --config <file>', 'policy YAML file', process.env.PUSHBACK_POLICY)
  .option('--log-format <format>', 'json (one JSON object a line, for machines) or pretty (one readable line each); default: pretty when stdout is a terminal, else json', parseLogFormat)
  .action(async (options: { config?: string; logFormat?: LogFormat }) => {
    const result = options.config ? await loadPolicyFile(options.config) : defaultPolicy();
    if (!result.ok) return exitWithProblems(result);
    const logger = createLogger(result.policy.log.level, undefined, options.logFormat ?? defaultLogFormat(process.stdout.isTTY));
    // With a policy file, SIGHUP and changes to the file reload it.
    const hooks = options.config ? { policySource: options.config } : {};
    const proxy = await startProxy(result.policy, logger, hooks).catch((error: Error) => {
      logger.fatal({ err: error }, 'cannot start');
      process.exit(1);
    });
    // SIGTERM and SIGINT drain (server.shutdownDrainSeconds) and exit 0; a second one cuts the drain short.
    const shutdown = (signal: string): void => {
      proxy.shutdown(signal).then(() => process.exit(0), (error: Error) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      });
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });

program
  .command('check-config')
  .description('validate a policy file; prints file:line:column: key: reason for every problem')
  .argument('<file>', 'policy YAML file')
  .action(async (file: string) => {
    const result = await loadPolicyFile(file);
    if (!result.ok) return exitWithProblems(result);
    process.stdout.write(`${file}: OK\n`);
  });

registerCheckUpstreamCommand(program);

program
  .command('entropy')
  .description("the entropy status of windows you give: H(Pn), H(Pa), D and S per window")
  .requiredOption('--normal <counts>', 'normal pairs per window, comma-separated (e.g. 100,95,87)')
  .requiredOption('--abnormal <counts>', 'abnormal pairs per window, comma-separated (e.g. 0,5,13)')
  .option('--delta <bits>', 'delta: |D| <= delta is critical', parseNumber, 0.5)
  .option('--min-pairs <n>', 'windows with fewer pairs are quiet (safe)', parseNumber, 0)
  .option('--json', 'print a JSON array instead of a table')
  .action((options: { normal: string; abnormal: string; delta: number; minPairs: number; json?: boolean }) => {
    const result = runEntropyCommand({ ...options, deltaBits: options.delta });
    (result.exitCode === 0 ? process.stdout : process.stderr).write(result.output);
    process.exitCode = result.exitCode;
  });

program
  .command('status')
  .description("a running proxy's server status (from its admin listener's /status)")
  .option('--admin <host:port>', 'admin listener (default: PUSHBACK_ADMIN, the policy, or 127.0.0.1:8025)')
  .option('-c, --config <file>', 'policy file to take admin.listen from', process.env.PUSHBACK_POLICY)
  .option('--json', 'print the JSON as /status gives it')
  .action(async (options: { admin?: string; config?: string; json?: boolean }) => {
    const admin = await adminAddress(options);
    if (!admin) return;
    try {
      const report = await fetchStatus(admin);
      process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report));
    } catch (error) {
      process.stderr.write(terminalSafe(`cannot read status from ${admin}: ${(error as Error).message}\n`));
      process.exitCode = 1;
    }
  });

program
  .command('top')
  .description("a running proxy's SFDS top sources: flows, packets, bytes, mean size, duration, rate")
  .option('-n, --n <count>', 'how many sources', parseNumber, 20)
  .option('--set <name>', 'the SFDS threshold set (default: the first)')
  .option('--admin <host:port>', 'admin listener (default: PUSHBACK_ADMIN, the policy, or 127.0.0.1:8025)')
  .option('-c, --config <file>', 'policy file to take admin.listen from', process.env.PUSHBACK_POLICY)
  .option('--json', 'print the rows as JSON')
  .action(async (options: { n: number; set?: string; admin?: string; config?: string; json?: boolean }) => {
    const admin = await adminAddress(options);
    if (!admin) return;
    try {
      const rows = await fetchTopSources(admin, Math.max(1, Math.round(options.n)), options.set);
      process.stdout.write(options.json ? `${JSON.stringify(rows, null, 2)}\n` : formatTopSources(rows));
    } catch (error) {
      process.stderr.write(terminalSafe(`cannot read sources from ${admin}: ${(error as Error).message}\n`));
      process.exitCode = 1;
    }
  });

/** The admin listener to ask: --admin, else the policy's (with PUSHBACK_ADMIN applied). */
async function adminAddress(options: { admin?: string; config?: string }): Promise<string | undefined> {
  if (options.admin) return options.admin;
  const result = options.config ? await loadPolicyFile(options.config) : defaultPolicy();
  if (!result.ok) {
    exitWithProblems(result);
    return undefined;
  }
  return formatHostPort(result.policy.admin.listen);
}

function parseNumber(value: string): number {
  const number = Number(value);
  if (value.trim() === '' || !Number.isFinite(number) || number < 0) throw new InvalidArgumentError('expected a non-negative number');
  return number;
}

function parseLogFormat(value: string): LogFormat {
  if (value !== 'json' && value !== 'pretty') throw new InvalidArgumentError('expected json or pretty');
  return value;
}

function exitWithProblems(result: Extract<PolicyResult, { ok: false }>): void {
  for (const problem of result.problems) process.stderr.write(`${formatProblem(problem)}\n`);
  process.exitCode = 1;
}

registerQuarantineCommands(program, adminAddress);
registerSfdsCommand(program);

await program.parseAsync(process.argv);
