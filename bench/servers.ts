// What the relay benchmarks share: building dist/, starting smtp-sink and the built proxy as
// children (or the proxy from src/ through tsx, as the demo does), one timed smtp-source run,
// machine facts, and environment knobs.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { freeLoopbackPort, runSmtpSource, startChild, waitForGreeting, type Child } from './children.js';
import type { Load, Sample } from './report.js';

export const ROOT = resolve(import.meta.dirname, '..');
const SMTP_SINK = '/usr/sbin/smtp-sink';

/** Policy lines every relay benchmark's proxy shares: many clients, quiet logs, smtp-sink upstream. */
export const BENCH_POLICY_LINES: readonly string[] = [
  'server: { maxClients: 2000 }',
  'log: { level: warn }',
  'upstream: { xclient: "off" }   # smtp-sink does not offer XCLIENT',
  'limits: { maxMessageBytes: 10240000 }',
];

/**
 * For relay throughput: every detector runs and every verdict is computed (their cost is measured),
 * but the single load generator, at thousands of sessions a minute, is not pushed back (SFDS would).
 */
export const OBSERVE_MODE = 'mode: observe';

export function buildDist(progress: (text: string) => void): void {
  progress('building dist/ (tsc -p tsconfig.build.json) ...');
  execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: ['ignore', 2, 2] });
}

export async function startSink(counting: boolean): Promise<{ child: Child; port: number }> {
  const port = await freeLoopbackPort();
  // As root smtp-sink must drop privileges (-u); -c prints its running counters, used only to verify.
  const args = ['-u', 'postfix', ...(counting ? ['-c'] : []), `127.0.0.1:${port}`, '1024'];
  const child = startChild(counting ? 'smtp-sink (counting)' : 'smtp-sink', SMTP_SINK, args);
  await waitForGreeting(port, child);
  return { child, port };
}

export interface ProxyChildOptions {
  upstreamPort: number;
  policyFile: string;
  spoolDir: string;
  /** Admin listener port (0: any); benchmarks that read /metrics pick one. */
  adminPort?: number;
  /** Absent: in-memory state. */
  redisUrl?: string;
  nodeArgs?: string[];
  name?: string;
  /** Run src/ through tsx instead of the built dist/ (no build step, never stale; for the demo). */
  fromSource?: boolean;
}

export async function startProxyChild(options: ProxyChildOptions): Promise<{ child: Child; port: number }> {
  const port = await freeLoopbackPort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PUSHBACK_LISTEN: `127.0.0.1:${port}`,
    PUSHBACK_UPSTREAM: `127.0.0.1:${options.upstreamPort}`,
    PUSHBACK_ADMIN: `127.0.0.1:${options.adminPort ?? 0}`,
    PUSHBACK_SPOOL_DIR: options.spoolDir,
  };
  if (options.redisUrl) env.PUSHBACK_REDIS_URL = options.redisUrl;
  else delete env.PUSHBACK_REDIS_URL;
  const entry = options.fromSource ? ['--import', 'tsx', join(ROOT, 'src/cli/main.ts')] : [join(ROOT, 'dist/cli/main.js')];
  const args = [...(options.nodeArgs ?? []), ...entry, 'serve', '--config', options.policyFile];
  const child = startChild(options.name ?? 'proxy', process.execPath, args, { cwd: ROOT, env });
  await waitForGreeting(port, child);
  return { child, port };
}

export function sourceArgs(current: Load, messages: number, port: number): string[] {
  return [
    '-s', String(current.sessions), ...(current.reuseConnections ? ['-d'] : []),
    '-m', String(messages), '-l', String(current.sizeBytes),
    '-f', 'bench@source.example', '-t', 'sink@sink.example', '-M', 'source.example',
    `127.0.0.1:${port}`,
  ];
}

/** One timed smtp-source run: messages / wall time, or null with the reason when it failed. */
export async function measure(port: number, current: Load, timeoutMs: number): Promise<Sample> {
  const run = await runSmtpSource(sourceArgs(current, current.messages, port), timeoutMs);
  const failed = run.timedOut || run.exitCode !== 0;
  const problems = [
    run.timedOut ? `killed after ${timeoutMs / 1000} s` : '',
    run.exitCode !== 0 && !run.timedOut ? `exit ${run.exitCode}` : '',
    run.stderr ? `stderr: ${run.stderr.split('\n').slice(0, 3).join(' | ')}` : '',
  ].filter(Boolean);
  const sample: Sample = { msgPerSec: failed ? null : current.messages / (run.elapsedMs / 1000), elapsedMs: run.elapsedMs };
  if (problems.length > 0) sample.error = problems.join('; ');
  return sample;
}

export function machineInfo(): { nproc: number; cpuModel: string; node: string; kernel: string; postfix: string; smtpServer: string } {
  let postfix = 'unknown';
  try {
    postfix = execFileSync('postconf', ['-dh', 'mail_version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    // postconf missing: smtp-source still ran, so only the version is unknown.
  }
  const smtpServer = (JSON.parse(readFileSync(join(ROOT, 'node_modules/smtp-server/package.json'), 'utf8')) as { version: string }).version;
  return { nproc: os.availableParallelism(), cpuModel: os.cpus()[0]?.model ?? 'unknown', node: process.version, kernel: `${os.type()} ${os.release()}`, postfix, smtpServer };
}

export function positiveNumber(variable: string, fallback: number): number {
  const text = process.env[variable];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${variable} must be a positive number, got "${text}"`);
  return value;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
