// `smtp-pushback check-upstream [--policy FILE] [--rcpt ADDRESS]…`: asks the policy's Postfix, the way the
// proxy will, whether it is ready for the proxy (src/upstream/probe.ts does the talking) and prints one line
// a finding with Postfix's own reply text. Exit codes: 0 everything the policy needs holds; 1 a check failed
// (or the policy or an option is unusable).
import { InvalidArgumentError, type Command } from 'commander';
import { defaultPolicy, formatProblem, loadPolicyFile } from '../config/load.js';
import { upstreamOptionsFromPolicy } from '../quarantine/release-delivery.js';
import { probeUpstream, type Finding } from '../upstream/probe.js';
import { terminalSafe } from './terminal-safe.js';

export interface CheckUpstreamOptions {
  policy?: string;
  config?: string;
  rcpt?: string[];
  /** Seconds (commander names it after --timeout). */
  timeout: number;
}

export function registerCheckUpstreamCommand(program: Command): void {
  program
    .command('check-upstream')
    .description("check the policy's Postfix as the proxy will use it: banner, EHLO extensions, XCLIENT from this host, recipients, open relay")
    .option('-p, --policy <file>', 'policy YAML file (upstream.address, upstream.xclient); default PUSHBACK_POLICY or the built-in defaults')
    .option('-c, --config <file>', 'the same as --policy', process.env.PUSHBACK_POLICY)
    .option('--rcpt <address>', 'a recipient Postfix must accept for a client outside mynetworks; repeatable', collectAddress)
    .option('--timeout <seconds>', "longest wait for each step (connect, each reply); the policy's upstream time-outs if shorter", positiveSeconds, 10)
    .action(async (options: CheckUpstreamOptions) => {
      process.exitCode = await runCheckUpstreamCommand(options, (text) => process.stdout.write(text), (text) => process.stderr.write(text));
    });
}

export async function runCheckUpstreamCommand(
  options: CheckUpstreamOptions, stdout: (text: string) => void, stderr: (text: string) => void,
): Promise<number> {
  const file = options.policy ?? options.config;
  const loaded = file ? await loadPolicyFile(file) : defaultPolicy();
  if (!loaded.ok) {
    for (const problem of loaded.problems) stderr(`${formatProblem(problem)}\n`);
    return 1;
  }
  const policy = loaded.policy;
  const stepMs = options.timeout * 1_000;
  const upstream = upstreamOptionsFromPolicy(policy);
  const findings = await probeUpstream({
    upstream: {
      ...upstream,
      connectTimeoutMs: Math.min(upstream.connectTimeoutMs, stepMs),
      replyTimeoutMs: Math.min(upstream.replyTimeoutMs, stepMs),
    },
    maxMessageBytes: policy.limits.maxMessageBytes,
    recipients: options.rcpt ?? [],
  });
  stdout(formatFindings(findings));
  return findings.some((finding) => finding.level === 'FAIL') ? 1 : 0;
}

/** One line a finding, its level first, then a summary line. Postfix's text passes through terminalSafe. */
export function formatFindings(findings: readonly Finding[]): string {
  const lines = findings.map((finding) => `${finding.level.padEnd(4)}  ${finding.text}`);
  const failed = findings.filter((finding) => finding.level === 'FAIL').length;
  lines.push(failed === 0 ? 'result: OK, Postfix is ready for the proxy' : `result: ${failed} check${failed === 1 ? '' : 's'} failed`);
  return terminalSafe(`${lines.join('\n')}\n`);
}

function collectAddress(value: string, previous: string[] | undefined): string[] {
  // Inside <...> on the RCPT line: no brackets, spaces or controls, and an @.
  if (!/^[^\s<>\x00-\x1f\x7f]+@[^\s<>@\x00-\x1f\x7f]+$/.test(value)) throw new InvalidArgumentError('expected an address such as postmaster@example.org');
  return [...(previous ?? []), value];
}

function positiveSeconds(value: string): number {
  const seconds = Number(value);
  if (value.trim() === '' || !Number.isFinite(seconds) || seconds <= 0) throw new InvalidArgumentError('expected a number of seconds above 0');
  return seconds;
}
