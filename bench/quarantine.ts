// Quarantine throughput (`npm run bench:quarantine`): in one run, on loopback, Postfix's smtp-source drives
// (a) the built proxy with the default policy, relaying into smtp-sink; (b) the same proxy with a policy that
// quarantines every source, so each message is written to the spool with its fsyncs before the 250; and
// (c) releasing what (b) held into a counting smtp-sink through the admin API (POST /quarantine/release
// {"all":true,"now":true} with the admin token), timed until GET /quarantine/stats shows nothing held or
// releasing. The rate of (c) is capped by the policy's release rate, printed with the results.
// Informational: exits 0 whatever the rates, 1 only when something crashed. Every wait is bounded.
// Environment: BENCH_REPEATS (3), BENCH_MESSAGES_SCALE (1), BENCH_TIMEOUT_SECONDS (120 per run),
// BENCH_RELEASE_RATE (1000 messages/s), BENCH_SPOOL_PARENT (os.tmpdir(); the fsync cost depends on its disk).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { idsIn, spoolLayout } from '../src/quarantine/spool-layout.js';
import { freeLoopbackPort, killAllChildrenNow, runSmtpSource, stopAllChildren, type Child } from './children.js';
import { formatSize, median, type Load, type Sample } from './report.js';
import { BENCH_POLICY_LINES, buildDist, machineInfo, OBSERVE_MODE, measure, positiveNumber, sleep, sourceArgs, startProxyChild, startSink } from './servers.js';

const repeats = Math.max(1, Math.round(positiveNumber('BENCH_REPEATS', 3)));
const scale = positiveNumber('BENCH_MESSAGES_SCALE', 1);
const timeoutMs = positiveNumber('BENCH_TIMEOUT_SECONDS', 120) * 1000;
const releaseRate = positiveNumber('BENCH_RELEASE_RATE', 1000);
const spoolParent = process.env.BENCH_SPOOL_PARENT || os.tmpdir();
const progress = (text: string): void => void process.stderr.write(`${text}\n`);

const RELEASE_CONCURRENCY = 8;
const WARM_UP_MESSAGES = 200;
const STATS_POLL_MS = 50;
const SETTLE_MS = 250;

const LOADS: Load[] = [
  { label: '-s 20 -d', sessions: 20, reuseConnections: true, sizeBytes: 1024, messages: Math.max(1, Math.round(2000 * scale)) },
  { label: '-s 20 -d', sessions: 20, reuseConnections: true, sizeBytes: 102_400, messages: Math.max(1, Math.round(500 * scale)) },
];
const PHASES = ['relay', 'quarantine', 'release'] as const;
type Phase = (typeof PHASES)[number];

const workDir = mkdtempSync(join(os.tmpdir(), 'bench-quarantine-'));
const spoolRoot = mkdtempSync(join(spoolParent, 'bench-quarantine-spool-'));
// The proxies inherit the environment (startProxyChild): this is how the quarantining one gets its token.
const adminToken = randomBytes(24).toString('hex');
process.env.PUSHBACK_ADMIN_TOKEN = adminToken;

const common = BENCH_POLICY_LINES;
const relayPolicy = join(workDir, 'relay.yaml');
writeFileSync(relayPolicy, `${[...common, OBSERVE_MODE].join('\n')}\n`);
// One release window of a minute, twelve hours away: nothing leaves the spool unless the bench says "now".
const windowHour = String((new Date().getUTCHours() + 12) % 24).padStart(2, '0');
const quarantinePolicy = join(workDir, 'quarantine.yaml');
writeFileSync(quarantinePolicy, [
  ...common,
  'pushback: { actions: [{ status: [1, 0, -1], minScore: 0, action: quarantine }] }',
  'quarantine:',
  '  maxMessages: 1000000',
  '  maxBytes: 10000000000',
  `  release: { messagesPerSecond: ${releaseRate}, concurrency: ${RELEASE_CONCURRENCY}, windows: [{ from: "${windowHour}:00", to: "${windowHour}:01" }] }`,
  '',
].join('\n'));

process.on('exit', () => {
  killAllChildrenNow();
  rmSync(workDir, { recursive: true, force: true });
  rmSync(spoolRoot, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    progress(`\n${signal}: stopping every child process`);
    void stopAllChildren().finally(() => process.exit(130));
  });
}

interface SpoolCounts {
  entries: number;
  byState: { held: number; releasing: number; released: number; rejected: number };
}

/** The admin API of the quarantining proxy; every call bounded. */
class Admin {
  constructor(private readonly port: number) {}

  async stats(): Promise<SpoolCounts | { unavailable: string }> {
    const response = await fetch(`http://127.0.0.1:${this.port}/quarantine/stats`, { signal: AbortSignal.timeout(5_000) });
    if (!response.ok) return { unavailable: `GET /quarantine/stats answered ${response.status}` };
    return (await response.json()) as SpoolCounts;
  }

  async releaseAll(): Promise<{ status: number; outcomes: Record<string, number>; error?: string }> {
    const response = await fetch(`http://127.0.0.1:${this.port}/quarantine/release`, {
      method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ all: true, now: true }), signal: AbortSignal.timeout(timeoutMs),
    });
    const body = (await response.json().catch(() => ({}))) as { results?: Array<{ outcome: string }>; error?: string };
    const outcomes: Record<string, number> = {};
    for (const result of body.results ?? []) outcomes[result.outcome] = (outcomes[result.outcome] ?? 0) + 1;
    return { status: response.status, outcomes, ...(response.ok ? {} : { error: body.error ?? `HTTP ${response.status}` }) };
  }
}

const pending = (counts: SpoolCounts): number => counts.byState.held + counts.byState.releasing;

async function counts(admin: Admin): Promise<SpoolCounts> {
  const stats = await admin.stats();
  if ('unavailable' in stats) throw new Error(stats.unavailable);
  return stats;
}

/** Entries on disk (their metadata files): counts what (b) stored whether or not the admin API is there. */
function entriesOnDisk(spoolDir: string): number {
  return idsIn(readdirSync(spoolLayout(spoolDir).metaDir), '.json').length;
}

/** (b): one smtp-source run into the quarantining proxy; a rate only if every message landed in the spool. */
async function measureQuarantine(port: number, spoolDir: string, current: Load): Promise<Sample & { quarantined: number }> {
  const before = entriesOnDisk(spoolDir);
  const sample = await measure(port, current, timeoutMs);
  const quarantined = entriesOnDisk(spoolDir) - before;
  if (quarantined === current.messages) return { ...sample, quarantined };
  const shortfall = `only ${quarantined} of ${current.messages} quarantined (the rest relayed or refused, e.g. 450 at RCPT)`;
  return { msgPerSec: null, elapsedMs: sample.elapsedMs, error: sample.error ? `${shortfall}; ${sample.error}` : shortfall, quarantined };
}

/** (c): release everything held, timed from the request until nothing is held or releasing; counted at the sink. */
async function measureRelease(admin: Admin, sink: Child): Promise<Sample & { delivered: number }> {
  const delivered = (): number => Number([...sink.stdout().matchAll(/mesg=(\d+)/g)].pop()?.[1] ?? 0);
  const before = await counts(admin);
  const sinkBefore = delivered();
  const startedMs = performance.now();
  const request = admin.releaseAll();
  const errors: string[] = [];
  // The scheduler may answer at once (queued) or once it is done: poll either way, bounded.
  let now = before;
  while (pending(now) > 0 && performance.now() - startedMs < timeoutMs) {
    await sleep(STATS_POLL_MS);
    now = await counts(admin);
  }
  const elapsedMs = performance.now() - startedMs;
  const answer = await request.catch((error: Error) => ({ status: 0, outcomes: {}, error: error.message }));
  // smtp-sink prints its counters once a second or so: give the last line time to arrive.
  const deadline = Date.now() + 2_000;
  while (delivered() - sinkBefore < pending(before) && Date.now() < deadline) await sleep(50);
  const count = delivered() - sinkBefore;
  if (answer.error) errors.push(`release request: ${answer.error}`);
  if (pending(now) > 0) errors.push(`${pending(now)} still held or releasing after ${timeoutMs / 1000} s`);
  if (count !== pending(before)) errors.push(`sink received ${count} of ${pending(before)} (outcomes ${JSON.stringify(answer.outcomes)})`);
  const sample: Sample & { delivered: number } = { msgPerSec: errors.length === 0 ? count / (elapsedMs / 1000) : null, elapsedMs, delivered: count };
  if (errors.length > 0) sample.error = errors.join('; ');
  return sample;
}

function filesystemOf(path: string): string {
  try {
    return execFileSync('stat', ['-f', '-c', '%T', path], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  buildDist(progress);
  const relaySink = await startSink(false);
  const quarantineSink = await startSink(true);
  const relayProxy = await startProxyChild({ upstreamPort: relaySink.port, policyFile: relayPolicy, spoolDir: join(spoolRoot, 'relay'), name: 'proxy (relay)' });
  const adminPort = await freeLoopbackPort();
  const quarantineSpool = join(spoolRoot, 'quarantine');
  const quarantineProxy = await startProxyChild({
    upstreamPort: quarantineSink.port, policyFile: quarantinePolicy, spoolDir: quarantineSpool, adminPort, name: 'proxy (quarantine)',
  });
  const admin = new Admin(adminPort);
  const children = [relaySink, quarantineSink, relayProxy, quarantineProxy].map((server) => server.child);
  const probe = await admin.stats();
  // Without the API (c) cannot run; (a) and (b) still can, (b) counted on disk.
  const noReleaseApi = 'unavailable' in probe ? `no quarantine admin API on the proxy (${probe.unavailable})` : undefined;
  if (noReleaseApi) progress(`${noReleaseApi}: release (c) is not measured`);

  const samples = LOADS.map(() => ({ relay: [] as Sample[], quarantine: [] as Sample[], release: [] as Sample[] }));
  const problems: string[] = [];
  progress('warm-up (untimed) ...');
  for (const current of LOADS) {
    await runSmtpSource(sourceArgs(current, WARM_UP_MESSAGES, relayProxy.port), timeoutMs);
    await runSmtpSource(sourceArgs(current, WARM_UP_MESSAGES, quarantineProxy.port), timeoutMs);
    if (!noReleaseApi && pending(await counts(admin)) > 0) await measureRelease(admin, quarantineSink.child);
  }

  for (let round = 0; round < repeats; round += 1) {
    for (const [index, current] of LOADS.entries()) {
      for (const child of children) {
        if (child.exited) throw new Error(`${child.name} died (${JSON.stringify(child.exited)}): ${child.stderr().trim()}`);
      }
      const relay = await measure(relayProxy.port, current, timeoutMs);
      await sleep(SETTLE_MS);
      const quarantine = await measureQuarantine(quarantineProxy.port, quarantineSpool, current);
      await sleep(SETTLE_MS);
      const skipRelease = noReleaseApi ?? (quarantine.quarantined === 0 ? 'nothing quarantined to release' : undefined);
      const release = skipRelease ? { msgPerSec: null, elapsedMs: 0, error: skipRelease } : await measureRelease(admin, quarantineSink.child);
      await sleep(SETTLE_MS);
      const row = samples[index]!;
      row.relay.push(relay);
      row.quarantine.push(quarantine);
      row.release.push(release);
      const where = `round ${round + 1}/${repeats} ${current.label} ${formatSize(current.sizeBytes)}`;
      for (const [phase, sample] of [['relay', relay], ['quarantine', quarantine], ['release', release]] as const) {
        if (sample.error && !(phase === 'release' && noReleaseApi)) problems.push(`${where} ${phase}: ${sample.error}`);
      }
      progress(`${where}: relay ${show(relay)}, quarantine ${show(quarantine)}, release ${show(release)}`);
    }
  }
  const finalCounts = noReleaseApi ? { entriesOnDisk: entriesOnDisk(quarantineSpool) } : await counts(admin);
  const logs = children.filter((child) => child.name.startsWith('proxy')).map((child) => [child.name, (child.stdout() + child.stderr()).trim()] as const);
  await stopAllChildren();

  const rate = (values: Sample[]): number | null => median(values.flatMap((sample) => (sample.msgPerSec === null ? [] : [sample.msgPerSec])));
  const header = ['load', 'size', 'msgs', 'relay msg/s', 'quarantine msg/s', 'release msg/s', 'quarantine/relay', 'release/relay'];
  const rows = LOADS.map((current, index) => {
    const row = samples[index]!;
    const medians: Record<Phase, number | null> = { relay: rate(row.relay), quarantine: rate(row.quarantine), release: rate(row.release) };
    return [current.label, formatSize(current.sizeBytes), String(current.messages), ...PHASES.map((phase) => whole(medians[phase])),
      ratio(medians.quarantine, medians.relay), ratio(medians.release, medians.relay)];
  });
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((cells) => cells[column]!.length)));
  const line = (cells: string[]): string => cells.map((cell, column) => (column < 2 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  ');
  const machine = machineInfo();
  const out = (text: string): void => void process.stdout.write(`${text}\n`);
  out(`\nsmtp-source on loopback, median of ${repeats} rounds (msg/s = messages / wall time)\n`);
  out([line(header), line(widths.map((width) => '-'.repeat(width))), ...rows.map(line)].join('\n'));
  out(`\nrelay:      the proxy, default policy in observe mode (detection runs, nothing is pushed back), into smtp-sink`);
  out(`quarantine: the proxy quarantining every source; each message fsynced (data, its directory, metadata, its directory)`
    + ` before the 250, spool on ${filesystemOf(spoolRoot)} (${spoolRoot})`);
  out(`release:    POST /quarantine/release {"all":true,"now":true} until nothing is held or releasing, counted at a counting smtp-sink;`
    + ` capped by the policy at ${releaseRate} msg/s, concurrency ${RELEASE_CONCURRENCY}`);
  out(`\nsamples (msg/s, in round order):`);
  for (const [index, current] of LOADS.entries()) {
    for (const phase of PHASES) out(`  ${formatSize(current.sizeBytes).padEnd(6)} ${phase.padEnd(10)} ${samples[index]![phase].map(show).join('  ')}`);
  }
  out(`spool at the end: ${JSON.stringify(finalCounts)}`);
  if (noReleaseApi) out(`release not measured: ${noReleaseApi}`);
  out(problems.length === 0 ? 'problems: none' : `problems (${problems.length}):\n  ${problems.join('\n  ')}`);
  for (const [name, log] of logs) out(log === '' ? `${name} logged nothing at warn or above` : `${name} log (warn and above, first lines):\n${log.split('\n').slice(0, 10).join('\n')}`);
  out(`\nmachine: ${machine.nproc} CPUs (${machine.cpuModel}), node ${machine.node}, ${machine.kernel}, Postfix ${machine.postfix}, smtp-server ${machine.smtpServer}`);
  out(`reproduce: BENCH_REPEATS=${repeats} BENCH_MESSAGES_SCALE=${scale} BENCH_TIMEOUT_SECONDS=${timeoutMs / 1000} BENCH_RELEASE_RATE=${releaseRate}`
    + `${process.env.BENCH_SPOOL_PARENT ? ` BENCH_SPOOL_PARENT=${spoolParent}` : ''} npm run bench:quarantine`);
}

function show(sample: Sample): string {
  return sample.msgPerSec === null ? 'failed' : `${Math.round(sample.msgPerSec)}`;
}

function whole(value: number | null): string {
  return value === null ? 'n/a' : Math.round(value).toLocaleString('en-US');
}

function ratio(numerator: number | null, denominator: number | null): string {
  return numerator === null || denominator === null || denominator === 0 ? 'n/a' : (numerator / denominator).toFixed(2);
}

try {
  await main();
} catch (error) {
  process.stderr.write(`bench:quarantine crashed: ${(error as Error).stack ?? String(error)}\n`);
  process.exitCode = 1;
} finally {
  await stopAllChildren();
}
