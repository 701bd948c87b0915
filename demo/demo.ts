// `npm run demo`: what the proxy is for, in about a minute, without Postfix and without root. A counting
// SMTP sink stands in for Postfix (demo/counting-sink.ts); the proxy runs from src/ at the shipped
// config/policy.yaml (only its addresses, a quieter log and upstream.xclient off changed: the sink offers
// no XCLIENT); the flood benchmark's own load runs against it, in child processes: its steady legitimate
// senders (bench/flood-legit.ts) for the whole run and, from 20 % to 80 % of it, its idle-connection flood
// (bench/flood-attacker.ts, the 'abandon' scenario) from 127.1.0.0/16. A progress line on stderr (redrawn
// in place on a terminal, a plain line every 5 s otherwise), then a table on stdout and the dashboard's
// URL. On a terminal the proxy and its dashboard stay up until Ctrl-C; otherwise the demo exits 0 after
// the table (1 when the proxy or a load process crashed). Loopback only; every phase is bounded in time.
// Environment: DEMO_SECONDS (50): length of the legitimate load; the whole run takes about 5 s more.
// DEMO_FLOOD_PROCESSES (1, at most 3): how many of bench:flood's three idle-flood processes run.
import { setMaxListeners } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import { ProgressLine } from '../src/cli/progress.js';
import { startBenchChild, type BenchChild } from '../bench/bench-child.js';
import { freeLoopbackPort, killAllChildrenNow, stopAllChildren, type Child } from '../bench/children.js';
import type { SessionResult } from '../bench/flood-client.js';
import { AdminPoller } from '../bench/flood-probe.js';
import { ABANDON, ABANDON_PROCESSES } from '../bench/flood-scenarios.js';
import { positiveNumber, ROOT, startProxyChild } from '../bench/servers.js';
import { startCountingSink, type CountingSink } from './counting-sink.js';
import { formatTable, progressText, statusText } from './demo-report.js';

const demoSeconds = positiveNumber('DEMO_SECONDS', 50);
const floodProcesses = Math.min(ABANDON_PROCESSES, Math.round(positiveNumber('DEMO_FLOOD_PROCESSES', 1)));
// As in bench:flood: the flood starts at 20 % of the run and new connections come for 60 % of it.
const attackStartMs = demoSeconds * 200;
const attackWindowMs = demoSeconds * 600;
/** After the legitimate load: its last sessions end within their 15 s deadline, the flood's on "hold-end". */
const WRAP_UP_MS = 30_000;
/** Everything but staying up must be over by then, whatever hangs: startup, load, wrap-up. */
const GIVE_UP_MS = demoSeconds * 1000 + WRAP_UP_MS + 60_000;
const PROGRESS_REDRAW_MS = 250;
const STAY_UP_POLL_MS = 1_000;

const interactive = process.stdin.isTTY === true && process.stdout.isTTY === true;
const progress = new ProgressLine(process.stderr, { intervalMs: PROGRESS_REDRAW_MS, plainEveryMs: 5_000 });
const say = (text: string): void => {
  progress.clear();
  process.stderr.write(`${text}\n`);
};

const workDir = mkdtempSync(join(os.tmpdir(), 'smtp-pushback-demo-'));
const interrupt = new AbortController();
setMaxListeners(0, interrupt.signal);
let sink: CountingSink | undefined;

/** The run is over and its table printed: from then on Ctrl-C is the way out, not an interruption. */
let finished = false;
const giveUp = setTimeout(() => {
  say(`demo: not done after ${GIVE_UP_MS / 1000} s, giving up`);
  void stop(1);
}, GIVE_UP_MS);
process.on('exit', () => {
  killAllChildrenNow();
  rmSync(workDir, { recursive: true, force: true });
});
process.once('SIGINT', () => void stop(finished ? 0 : 130));
process.once('SIGTERM', () => void stop(143));

try {
  const { crashed, adminPort } = await run();
  finished = true;
  clearTimeout(giveUp);
  if (crashed) await stop(1);
  else if (interactive) await stayUp(adminPort);
  else await stop(0);
} catch (error) {
  if (!interrupt.signal.aborted) {
    say(`demo failed: ${(error as Error).stack ?? String(error)}`);
    await stop(1);
  }
}

/** One run: sink, proxy, load, table; `crashed` when the proxy exited meanwhile. */
async function run(): Promise<{ crashed: boolean; adminPort: number }> {
  say(`smtp-pushback demo: ${demoSeconds} s of steady legitimate mail, and an idle-connection flood from ${attackStartMs / 1000} s to ${(attackStartMs + attackWindowMs) / 1000} s`);
  sink = await startCountingSink();
  const policyFile = join(workDir, 'policy.yaml');
  writeFileSync(policyFile, demoPolicy());
  const adminPort = await freeLoopbackPort();
  const proxy = await startProxyChild({ upstreamPort: sink.port, policyFile, spoolDir: join(workDir, 'spool'), adminPort, name: 'proxy', fromSource: true });
  const dashboardUrl = `http://127.0.0.1:${adminPort}/`;
  say(`proxy on 127.0.0.1:${proxy.port} (config/policy.yaml as shipped), relaying to a counting SMTP sink on 127.0.0.1:${sink.port}; dashboard ${dashboardUrl}`);

  const legit: SessionResult[] = [];
  const flood: SessionResult[] = [];
  const attackers = await Promise.all(Array.from({ length: floodProcesses }, (_, part) => startBenchChild('bench/flood-attacker.ts',
    ['abandon', String(proxy.port), String(part), String(ABANDON_PROCESSES), String(attackWindowMs)], (result) => flood.push(result), interrupt.signal)));
  const poller = new AdminPoller(adminPort);
  const legitRun = await startBenchChild('bench/flood-legit.ts', [String(proxy.port), String(demoSeconds), '0'], (result) => legit.push(result), interrupt.signal);
  const startedMs = performance.now();
  let phase = 'no flood yet';
  const redraw = (): void => progress.update(0, () => progressText({
    elapsedSeconds: (performance.now() - startedMs) / 1000, demoSeconds, phase,
    legitDelivered: sink?.accepted('legit') ?? 0, legitRefused: legit.filter((result) => result.outcome !== 'accepted').length, admin: poller.latest(),
  }));
  const ticker = setInterval(redraw, PROGRESS_REDRAW_MS);
  try {
    await abortableSleep(attackStartMs);
    poller.markAttack();
    for (const attacker of attackers) attacker.process.stdin?.write('start\n');
    phase = 'flood on';
    const windowEnd = setTimeout(() => { phase = 'flood over, its connections held'; }, attackWindowMs);
    await legitRun.done;
    clearTimeout(windowEnd);
    phase = 'wrapping up';
    for (const attacker of attackers) attacker.process.stdin?.write('hold-end\n');
    await Promise.all(attackers.map((attacker: BenchChild) => attacker.done));
  } finally {
    clearInterval(ticker);
  }
  const timeline = await poller.stop();
  progress.done();
  const perProcess = ABANDON.perSecond / ABANDON_PROCESSES;
  const floodDescription = `idle, from ${formatThousands(ABANDON.addresses)} addresses in 127.1.0.0/16, ${formatThousands(perProcess * floodProcesses)} new a second `
    + `(${floodProcesses} of bench:flood's ${ABANDON_PROCESSES} processes)`;
  process.stdout.write(formatTable({
    demoSeconds, legit, legitDelivered: sink.accepted('legit'), flood, floodDescription, metrics: timeline.final,
    dangerAfterSeconds: timeline.dangerAfterSeconds, dashboardUrl, stayingUp: interactive && !proxy.child.exited,
  }));
  return { crashed: reportCrash(proxy.child), adminPort };
}

/** On a terminal: the proxy and its dashboard stay up, the status line follows it, until Ctrl-C. */
async function stayUp(port: number): Promise<void> {
  say('the proxy stays up with its dashboard; Ctrl-C to stop');
  const line = new ProgressLine(process.stderr, { intervalMs: STAY_UP_POLL_MS });
  while (!interrupt.signal.aborted) {
    const status = await fetch(`http://127.0.0.1:${port}/status`, { signal: AbortSignal.timeout(STAY_UP_POLL_MS) })
      .then(async (response) => ((await response.json()) as { status?: number }).status)
      .catch(() => undefined);
    line.show(0, () => `proxy up, ${statusText(status)} · dashboard http://127.0.0.1:${port}/ · Ctrl-C to stop`);
    await abortableSleep(STAY_UP_POLL_MS);
  }
}

/**
 * The shipped config/policy.yaml with only what the demo must change: a quieter log, and XCLIENT off (the
 * sink does not offer it). Addresses and the spool come from the environment (startProxyChild).
 */
function demoPolicy(): string {
  const document = parseDocument(readFileSync(join(ROOT, 'config/policy.yaml'), 'utf8'));
  document.setIn(['log', 'level'], 'warn');
  document.setIn(['upstream', 'xclient'], 'off');
  return document.toString();
}

function reportCrash(child: Child): boolean {
  if (!child.exited) return false;
  say(`the proxy exited during the demo (${JSON.stringify(child.exited)}): ${child.stderr().trim().slice(-2_000)}`);
  return true;
}

async function stop(exitCode: number): Promise<never> {
  interrupt.abort();
  progress.done();
  clearTimeout(giveUp);
  await Promise.allSettled([stopAllChildren(), sink?.close()]);
  process.exit(exitCode);
}

/** Resolves after `ms`, or at once on an interrupt. */
function abortableSleep(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      interrupt.signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    interrupt.signal.addEventListener('abort', done, { once: true });
  });
}

function formatThousands(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}
