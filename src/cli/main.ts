#!/usr/bin/env node
// The smtp-pushback command: `serve` runs the proxy, `check-config` validates a policy file.
import { Command } from 'commander';
import { defaultPolicy, formatProblem, loadPolicyFile, type PolicyResult } from '../config/load.js';
import { createLogger } from '../log.js';
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
  .action(async (options: { config?: string }) => {
    const result = options.config ? await loadPolicyFile(options.config) : defaultPolicy();
    if (!result.ok) return exitWithProblems(result);
    const logger = createLogger(result.policy.log.level);
    const proxy = await startProxy(result.policy, logger).catch((error: Error) => {
      logger.fatal({ err: error }, 'cannot start');
      process.exit(1);
    });
    const shutdown = (signal: string): void => {
      logger.info({ signal }, 'shutting down');
      proxy.stop().then(() => process.exit(0), () => process.exit(1));
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
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

function exitWithProblems(result: Extract<PolicyResult, { ok: false }>): void {
  for (const problem of result.problems) process.stderr.write(`${formatProblem(problem)}\n`);
  process.exitCode = 1;
}

await program.parseAsync(process.argv);
