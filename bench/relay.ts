// Relay throughput benchmark (`npm run bench:relay`): Postfix's smtp-source drives, on loopback,
// (1) smtp-sink directly: the physical limit of the path; (2) a bare smtp-server: the ceiling of our
// stack; (3) the built proxy in front of the same smtp-sink. Targets run interleaved within each
// round so machine noise hits all of them alike; the median of the rounds is reported, with the
// issue's targets (proxy >= 0.8 x bare with -s 100, >= 0.5 x bare with -s 20 -d) as PASS/FAIL.
// Informational: exits 0 whatever the ratios, 1 only when something crashed.
// Options: --json [FILE] (results object to FILE, or stdout with the report on stderr),
// --profile DIR (afterwards, a CPU profile of the proxy under -s 20 -d 1 KB, top self times).
// Environment: BENCH_REPEATS (3), BENCH_MESSAGES_SCALE (1), BENCH_TIMEOUT_SECONDS (60 per run).
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { killAllChildrenNow, runSmtpSource, startChild, stopAllChildren, stopChild, waitForGreeting, waitForStdout, type Child } from './children.js';
import { BENCH_POLICY_LINES, buildDist, machineInfo, OBSERVE_MODE, measure as measureRun, positiveNumber, ROOT, sleep, sourceArgs, startProxyChild, startSink } from './servers.js';
import { summariseProfile, type ProfileSummary, type SelfTime } from './cpu-profile.js';
import { evaluateTargets, formatSamples, formatSize, formatTable, formatTargets, summariseRow, TARGETS, type Load, type Row, type Sample, type TargetName } from './report.js';

/** Pause between runs, so one run's closing connections do not land in the next one's time. */
const SETTLE_MS = 250;
/** Messages per warm-up run and per target, before the timed rounds. */
const WARM_UP_MESSAGES = 300;
/** Messages per verification run: enough to cover every session, small enough to be quick. */
const VERIFY_MESSAGES = 300;

const repeats = Math.max(1, Math.round(positiveNumber('BENCH_REPEATS', 3)));
const scale = positiveNumber('BENCH_MESSAGES_SCALE', 1);
const timeoutMs = positiveNumber('BENCH_TIMEOUT_SECONDS', 60) * 1000;
const { jsonTarget, profileDir } = parseArguments(process.argv.slice(2));
// With the results object on stdout, the human-readable report moves to stderr.
const report = (text: string): void => void (jsonTarget === '-' ? process.stderr : process.stdout).write(`${text}\n`);
const progress = (text: string): void => void process.stderr.write(`${text}\n`);

const LOADS: Load[] = [
  load('-s 100', 100, false, 1024, 2000),
  load('-s 100', 100, false, 102_400, 1000),
  load('-s 20 -d', 20, true, 1024, 5000),
  load('-s 20 -d', 20, true, 102_400, 1000),
];

const workDir = mkdtempSync(join(os.tmpdir(), 'bench-relay-'));
const policyFile = join(workDir, 'policy.yaml');
writeFileSync(policyFile, `${[...BENCH_POLICY_LINES, OBSERVE_MODE].join('\n')}\n`);

process.on('exit', () => {
  killAllChildrenNow();
  rmSync(workDir, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    progress(`\n${signal}: stopping every child process`);
    void stopAllChildren().finally(() => process.exit(130));
  });
}

try {
  await main();
} catch (error) {
  process.stderr.write(`bench:relay crashed: ${(error as Error).stack ?? String(error)}\n`);
  process.exitCode = 1;
} finally {
  await stopAllChildren();
}

async function main(): Promise<void> {
  buildDist(progress);

  const sink = await startSink(false);
  const bare = await startBare();
  const proxy = await startProxy(sink.port);
  const servers: Record<TargetName, { child: Child; port: number }[]> = { sink: [sink], bare: [bare], proxy: [proxy, sink] };
  const samples = LOADS.map(() => ({ sink: [] as Sample[], bare: [] as Sample[], proxy: [] as Sample[] }));
  const errors: string[] = [];

  // Untimed warm-up, so round 1 does not also measure V8 compiling the hot paths of bare and proxy.
  for (const current of LOADS) {
    for (const target of ['bare', 'proxy'] as const) {
      const run = await runSmtpSource(sourceArgs(current, WARM_UP_MESSAGES, (servers[target][0] as { port: number }).port), timeoutMs);
      if (run.exitCode !== 0 || run.stderr) errors.push(`warm-up ${target} ${current.label} ${formatSize(current.sizeBytes)}: exit ${run.exitCode} ${run.stderr}`);
    }
  }

  for (let round = 0; round < repeats; round += 1) {
    for (const [index, current] of LOADS.entries()) {
      // Rotating the order each round keeps "who runs right after whom" from favouring one target.
      for (const target of TARGETS.map((_, offset) => TARGETS[(offset + round) % TARGETS.length] as TargetName)) {
        for (const { child } of servers[target]) {
          if (child.exited) throw new Error(`${child.name} died (${JSON.stringify(child.exited)}): ${child.stderr().trim()}`);
        }
        const sample = await measureRun((servers[target][0] as { port: number }).port, current, timeoutMs);
        samples[index]?.[target].push(sample);
        if (sample.error) errors.push(`round ${round + 1} ${target} ${current.label} ${formatSize(current.sizeBytes)}: ${sample.error}`);
        progress(`round ${round + 1}/${repeats}  ${current.label.padEnd(8)} ${formatSize(current.sizeBytes).padEnd(6)} ${target.padEnd(5)} `
          + (sample.msgPerSec === null ? `FAILED ${sample.error}` : `${Math.round(sample.msgPerSec)} msg/s in ${(sample.elapsedMs / 1000).toFixed(2)} s`));
        await sleep(SETTLE_MS);
      }
    }
  }
  const proxyLog = (proxy.child.stdout() + proxy.child.stderr()).trim();
  await stopChild(proxy.child);
  await stopChild(bare.child);
  await stopChild(sink.child);

  const verification = await verifyDelivery();
  const profile = profileDir ? await profileProxy(profileDir) : undefined;
  const rows: Row[] = LOADS.map((current, index) => summariseRow(current, samples[index] as Row['samples']));
  const targets = evaluateTargets(rows);
  const machine = machineInfo();
  const command = `BENCH_REPEATS=${repeats} BENCH_MESSAGES_SCALE=${scale} BENCH_TIMEOUT_SECONDS=${timeoutMs / 1000} npm run bench:relay`
    + (process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : '');

  report(`\nsmtp-source on loopback, median of ${repeats} rounds (msg/s = messages / wall time of smtp-source)\n`);
  report(formatTable(rows));
  report(`\nsamples (msg/s, in round order):\n${formatSamples(rows)}`);
  report(`\n${formatTargets(targets)}`);
  report(`\ndelivery check (counting smtp-sink behind a fresh proxy): ${verification.ok ? 'OK' : 'FAILED'}`);
  for (const line of verification.lines) report(`  ${line}`);
  report(errors.length === 0 ? 'smtp-source: every run exited 0 with nothing on stderr' : `smtp-source problems (${errors.length}):\n  ${errors.join('\n  ')}`);
  report(proxyLog === '' ? 'proxy logged nothing at warn or above' : `proxy log (warn and above):\n${proxyLog.split('\n').slice(0, 20).join('\n')}`);
  if (profile) report(`\nproxy CPU profile (-s 20 -d 1 KB):\n${profile.lines.join('\n')}`);
  report(`\nmachine: ${machine.nproc} CPUs (${machine.cpuModel}), node ${machine.node}, ${machine.kernel}, Postfix ${machine.postfix}, smtp-server ${machine.smtpServer}`);
  report(`reproduce: ${command}`);

  const results = { command, machine, repeats, scale, rows, targets, errors, verification, proxyLog, profile };
  if (jsonTarget === '-') process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  else if (jsonTarget) writeFileSync(jsonTarget, `${JSON.stringify(results, null, 2)}\n`);
}

/** Every load through a fresh proxy into a counting smtp-sink (-c): the sink must see every message. */
async function verifyDelivery(): Promise<{ ok: boolean; lines: string[] }> {
  const sink = await startSink(true);
  const proxy = await startProxy(sink.port);
  const delivered = (): number => Number([...sink.child.stdout().matchAll(/mesg=(\d+)/g)].pop()?.[1] ?? 0);
  const lines: string[] = [];
  let ok = true;
  for (const current of LOADS) {
    const before = delivered();
    const run = await runSmtpSource(sourceArgs(current, VERIFY_MESSAGES, proxy.port), timeoutMs);
    // The proxy answers the client only after the sink's 250, so the count is final; allow for its output to arrive.
    const deadline = Date.now() + 2_000;
    while (delivered() - before < VERIFY_MESSAGES && Date.now() < deadline) await sleep(20);
    const received = delivered() - before;
    const good = run.exitCode === 0 && !run.timedOut && run.stderr === '' && received === VERIFY_MESSAGES;
    ok &&= good;
    lines.push(`${good ? 'ok    ' : 'FAILED'} ${current.label} ${formatSize(current.sizeBytes)}: sent ${VERIFY_MESSAGES}, sink received ${received}, `
      + `smtp-source exit ${run.timedOut ? 'timeout' : run.exitCode}${run.stderr ? `, stderr: ${run.stderr.split('\n')[0]}` : ''}`);
  }
  await stopChild(proxy.child);
  await stopChild(sink.child);
  return { ok, lines };
}

/**
 * The -s 20 -d 1 KB load through a proxy started with --cpu-prof (written when it exits): a warm-up
 * run, then three times the usual messages, so start-up is a small part of the profile.
 */
async function profileProxy(directory: string): Promise<{ file: string; summary: ProfileSummary; lines: string[] }> {
  mkdirSync(directory, { recursive: true });
  const sink = await startSink(false);
  const proxy = await startProxy(sink.port, ['--cpu-prof', '--cpu-prof-dir', directory]);
  const current = LOADS.find((entry) => entry.reuseConnections && entry.sizeBytes === 1024) as Load;
  await runSmtpSource(sourceArgs(current, WARM_UP_MESSAGES, proxy.port), timeoutMs);
  const run = await runSmtpSource(sourceArgs(current, current.messages * 3, proxy.port), timeoutMs);
  await stopChild(proxy.child, 15_000);
  await stopChild(sink.child);
  const pid = String(proxy.child.process.pid);
  const written = readdirSync(directory).filter((name) => name.endsWith('.cpuprofile') && name.split('.').includes(pid));
  if (written.length === 0) throw new Error(`no .cpuprofile from proxy pid ${pid} in ${directory}`);
  const file = join(directory, written[0] as string);
  const summary = await summariseProfile(file, ROOT);
  const row = (entry: SelfTime): string => `  ${entry.sharePercent.toFixed(1).padStart(5)}%  ${entry.selfMs.toFixed(0).padStart(6)} ms  ${entry.where}`;
  const lines = [
    `  ${Math.round((current.messages * 3) / (run.elapsedMs / 1000))} msg/s while profiled (smtp-source exit ${run.exitCode}); ${file}`,
    `  busy ${summary.busyMs.toFixed(0)} ms, idle ${summary.idleMs.toFixed(0)} ms; shares are of busy time`,
    '  by area:', ...summary.byArea.map(row), '  top functions by self time:', ...summary.top.map(row),
  ];
  return { file, summary, lines };
}

async function startBare(): Promise<{ child: Child; port: number }> {
  const child = startChild('bare smtp-server', process.execPath, ['--import', 'tsx', join(ROOT, 'bench/bare-server.ts'), '0'], { cwd: ROOT });
  const port = await waitForStdout(child, (line) => /^\{"listening":(\d+)\}$/.exec(line.trim())?.[1]);
  await waitForGreeting(Number(port), child);
  return { child, port: Number(port) };
}

function load(label: string, sessions: number, reuseConnections: boolean, sizeBytes: number, baseMessages: number): Load {
  return { label, sessions, reuseConnections, sizeBytes, messages: Math.max(1, Math.round(baseMessages * scale)) };
}

function parseArguments(args: string[]): { jsonTarget: string | undefined; profileDir: string | undefined } {
  let jsonTarget: string | undefined;
  let profileDir: string | undefined;
  for (let index = 0; index < args.length; index += 1) {
    const [name, inlineValue] = (args[index] as string).split(/=(.*)/s) as [string, string | undefined];
    const next = args[index + 1];
    const takesNext = inlineValue === undefined && next !== undefined && !next.startsWith('--');
    const value = inlineValue ?? (takesNext ? next : undefined);
    if (takesNext) index += 1;
    if (name === '--json') jsonTarget = value || '-';
    else if (name === '--profile' && value) profileDir = resolve(value);
    else throw new Error(`unexpected argument ${args[index]}; usage: bench/relay.ts [--json [FILE]] [--profile DIR]`);
  }
  return { jsonTarget, profileDir };
}

/** The proxy for this benchmark: in-memory state (Redis round trips would measure Redis, not the relay). */
function startProxy(upstreamPort: number, nodeArgs: string[] = []): Promise<{ child: Child; port: number }> {
  return startProxyChild({ upstreamPort, policyFile, spoolDir: join(workDir, 'spool'), nodeArgs });
}
