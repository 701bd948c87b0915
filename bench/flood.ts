// Flood benchmark (`npm run bench:flood`): a throwaway Postfix with its stock process limit (100
// smtpd) takes steady legitimate mail (proven senders, and one in five never seen before; sent from a
// child process, bench/flood-legit.ts, apart from the attacker's sockets) while one attack runs beside it
// (abandoned handshakes, a botnet, early talkers, a one-source spam burst, a flash crowd), first
// straight into Postfix (A), then into a second Postfix, the same but with postscreen(8) on its
// port at postscreen's defaults (B, an anchor: what stock Postfix does without us), then through a
// fresh proxy in front of the first Postfix (C). Prints, per scenario, delivery and latency of the
// legitimate mail, the attack's connections by what the client saw, what reached the maildirs,
// postscreen's verdicts, the proxy's actions and detection times, and the issue's targets as
// PASS/FAIL (judged on C; A and B beside it). Loopback only; every loop is bounded in count and time.
// Informational: exits 0 whatever the numbers, 1 only when something crashed (the proxy included).
// Options: --json [FILE] (results object to FILE, or stdout with the report on stderr).
// Environment: BENCH_FLOOD_SECONDS (20): length of each phase; the attack runs from 20 % to 80 % of it.
// BENCH_FLOOD_SCENARIOS (all): comma-separated scenario ids to run, e.g. "baseline,burst".
// BENCH_FLOOD_MAX_CLIENTS (unset: the shipped default): server.maxClients for the proxy.
// BENCH_FLOOD_TARGETS (all): comma-separated targets to run (postfix, postscreen, proxy).
// BENCH_FLOOD_PROFILE_DIR (unset): each proxy runs with --cpu-prof into this directory.
import { setMaxListeners } from 'node:events';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import { startPostfix, type PostfixInstance } from '../test/support/postfix.js';
import { startBenchChild, type BenchChild } from './bench-child.js';
import { summariseProfile, type SelfTime } from './cpu-profile.js';
import { freeLoopbackPort, killAllChildrenNow, stopAllChildren, stopChild, type Child } from './children.js';
import { SocketPool, type SessionResult } from './flood-client.js';
import { AdminPoller, metricByLabel, metricTotal, summarisePostfixLog, summariseProxyLog, takeMailbox, waitForDelivery, type AdminTimeline } from './flood-probe.js';
import { afterDetection, slowestSessions, evaluateTargets, formatScenario, formatTargets, ms, percentile, tally, TARGETS, type PhaseResult, type TargetName } from './flood-report.js';
import { FRESH_EVERY, LEGIT_ADDRESS_COUNT, LEGIT_DEADLINE_MS, LEGIT_SESSIONS_PER_SECOND, messageKind, SCENARIOS, warmLegitSenders, type Scenario } from './flood-scenarios.js';
import { buildDist, machineInfo, positiveNumber, ROOT, sleep, startProxyChild } from './servers.js';

/** Pause after each phase, so Postfix's smtpd processes see their clients gone before the next one. */
const SETTLE_MS = 1_500;
const POSTFIX_PROCESS_LIMIT = 100;

const phaseSeconds = positiveNumber('BENCH_FLOOD_SECONDS', 20);
const attackStartMs = phaseSeconds * 200;
const attackWindowMs = phaseSeconds * 600;
const scenarios = pickScenarios(process.env.BENCH_FLOOD_SCENARIOS);
// BENCH_FLOOD_TARGETS (all): e.g. "proxy" to iterate on the proxy alone; the report leaves the others blank.
const runTargets = process.env.BENCH_FLOOD_TARGETS ? TARGETS.filter((target) => process.env.BENCH_FLOOD_TARGETS?.split(',').includes(target)) : TARGETS;
const jsonTarget = parseArguments(process.argv.slice(2));
// With the results object on stdout, the human-readable report moves to stderr.
const report = (text: string): void => void (jsonTarget === '-' ? process.stderr : process.stdout).write(`${text}\n`);
const progress = (text: string): void => void process.stderr.write(`${text}\n`);

const workDir = mkdtempSync(join(os.tmpdir(), 'bench-flood-'));
const policyFile = join(workDir, 'policy.yaml');
const policy = benchPolicy();
writeFileSync(policyFile, policy.text);

const interrupt = new AbortController();
setMaxListeners(0, interrupt.signal);
const pool = new SocketPool();
let postfix: PostfixInstance | undefined;
let postscreen: PostfixInstance | undefined;
/** The next never-seen legitimate sender's number: each phase's fresh senders are new to every target. */
let nextFreshSender = 0;

process.on('exit', () => {
  pool.closeAll();
  killAllChildrenNow();
  rmSync(workDir, { recursive: true, force: true });
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    progress(`\n${signal}: closing every socket, stopping the proxy and Postfix`);
    interrupt.abort();
    pool.closeAll();
    void Promise.allSettled([stopAllChildren(), postfix?.stop(), postscreen?.stop()]).finally(() => process.exit(130));
  });
}

try {
  await main();
} catch (error) {
  if (!interrupt.signal.aborted) {
    process.stderr.write(`bench:flood crashed: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  }
} finally {
  pool.closeAll();
  await stopAllChildren();
  await Promise.allSettled([postfix?.stop(), postscreen?.stop()]);
}

async function main(): Promise<void> {
  const startedMs = performance.now();
  buildDist(progress);
  // mynetworks is only the proxy's own address: the senders are Internet clients to Postfix, so its
  // per-client limits (anvil) apply to them as they would on a real MX.
  const postfixOptions = { processLimit: POSTFIX_PROCESS_LIMIT, users: ['legit', 'attack'], mynetworks: ['127.0.0.1/32'] };
  postfix = await startPostfix(postfixOptions);
  // B: the same Postfix with postscreen on its port, nothing else changed. The proxy's upstream stays A's.
  postscreen = await startPostfix({ ...postfixOptions, postscreen: true });
  progress(`Postfix on 127.0.0.1:${postfix.port}, Postfix with postscreen on 127.0.0.1:${postscreen.port} (default_process_limit ${POSTFIX_PROCESS_LIMIT}); `
    + `${phaseSeconds} s per phase, attack from ${attackStartMs / 1000} s for ${attackWindowMs / 1000} s`);
  // Proven senders are proven to postscreen too: one message each puts them in its cache (PASS OLD).
  const warmed = await warmLegitSenders(postscreen.port, pool, interrupt.signal);
  pool.closeAll();
  progress(`postscreen cache warmed: ${warmed}/${LEGIT_ADDRESS_COUNT} steady senders passed its pregreet test`);
  const servers: Record<TargetName, PostfixInstance> = { postfix, postscreen, proxy: postfix };

  const phases: PhaseResult[] = [];
  const timelines: Record<string, AdminTimeline['samples']> = {};
  for (const scenario of scenarios) {
    for (const target of runTargets) {
      if (interrupt.signal.aborted) return;
      const { result, samples } = await runPhase(servers[target], scenario, target);
      phases.push(result);
      if (samples) timelines[scenario.id] = samples;
      progress(`${scenario.id.padEnd(8)} ${target.padEnd(10)} legit ${result.legit.delivered}/${result.legit.sessions} p99 ${ms(result.legit.p99Ms)}`
        + (result.attack ? `, attack ${result.attack.sessions} connections, ${result.attack.delivered} delivered` : '')
        + (result.flash ? `, flash ${result.flash.delivered}/${result.flash.sessions}` : '')
        + ` (${result.elapsedSeconds.toFixed(1)} s)`);
      if (result.proxy?.crashed) process.exitCode = 1;
    }
  }

  const baseline = (target: TargetName): number | null => phases.find((phase) => phase.scenario === 'baseline' && phase.target === target)?.legit.p99Ms ?? null;
  const noAttackP99 = Object.fromEntries(TARGETS.map((target) => [target, baseline(target)])) as Record<TargetName, number | null>;
  const targets = evaluateTargets(phases);
  const machine = machineInfo();
  const elapsedSeconds = (performance.now() - startedMs) / 1000;
  const only = process.env.BENCH_FLOOD_SCENARIOS ? `BENCH_FLOOD_SCENARIOS=${scenarios.map((scenario) => scenario.id).join(',')} ` : '';
  const command = `${only}BENCH_FLOOD_SECONDS=${phaseSeconds} npm run bench:flood${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;

  report(`\nflood benchmark: Postfix ${machine.postfix} with default_process_limit ${POSTFIX_PROCESS_LIMIT}, A = clients straight into Postfix, `
    + 'B = into a second such Postfix with postscreen in front of smtpd (postscreen defaults; its cache warmed with the steady senders), C = through a fresh proxy to A\'s Postfix');
  report(`proxy policy: config/policy.yaml (mode: ${policy.mode}) with log.level warn, upstream.xclient required; ${process.env.BENCH_FLOOD_MAX_CLIENTS ? `server.maxClients ${process.env.BENCH_FLOOD_MAX_CLIENTS}` : 'capacity as shipped (server.maxClients unset)'}`);
  report(`each phase ${phaseSeconds} s: ${LEGIT_SESSIONS_PER_SECOND} legitimate sessions/s (in a process of their own), from ${LEGIT_ADDRESS_COUNT} proven addresses (127.0.0.2-11) and, one in ${FRESH_EVERY}, `
    + `from a sender never seen before (127.8.0.0/16; one message each, `
    + `latency = connect to the 250 after the dot, undelivered after ${LEGIT_DEADLINE_MS / 1000} s = failed); attack from ${attackStartMs / 1000} s to ${(attackStartMs + attackWindowMs) / 1000} s\n`);
  for (const scenario of scenarios) {
    report(`${formatScenario(scenario.id, scenario.title, phases.filter((phase) => phase.scenario === scenario.id), noAttackP99)}\n`);
  }
  report(formatTargets(targets));
  report(`\nnote: this Postfix listens on loopback only, so its master never starts smtpd with stress=yes (MASTER_FLAG_LOCAL_ONLY):`
    + ' no stress-adaptive timeouts (smtpd_timeout stays 300 s, postscreen_greet_wait 6 s) and no "reached its process limit" warning, as for a Postfix behind the proxy on 127.0.0.1.');
  const logged = phases.filter((phase) => (phase.proxy?.log.length ?? 0) > 0);
  report(logged.length === 0 ? '\nproxy logged nothing at warn or above' : '\nproxy log at warn and above, per phase, most frequent first (counted in the last 64 KB of its output):');
  for (const phase of logged) report(`  ${phase.scenario}: ${phase.proxy?.log.slice(0, 4).join('; ')}`);
  for (const phase of phases.filter((entry) => entry.proxy?.crashed)) report(`proxy CRASHED in ${phase.scenario}: ${phase.proxy?.crashed}`);
  report(`\nmachine: ${machine.nproc} CPUs (${machine.cpuModel}), node ${machine.node}, ${machine.kernel}, Postfix ${machine.postfix}, smtp-server ${machine.smtpServer}`);
  report(`run time: ${elapsedSeconds.toFixed(0)} s`);
  report(`reproduce: ${command}`);

  const results = { command, machine, policyMode: policy.mode, phaseSeconds, attackStartMs, attackWindowMs, elapsedSeconds, phases, targets, proxyStatusTimelines: timelines };
  if (jsonTarget === '-') process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  else if (jsonTarget) writeFileSync(jsonTarget, `${JSON.stringify(results, null, 2)}\n`);
}

/** One scenario against one target: fresh proxy (C), legitimate load, the attack window, drain, count. */
async function runPhase(server: PostfixInstance, scenario: Scenario, target: TargetName): Promise<{ result: PhaseResult; samples?: AdminTimeline['samples'] }> {
  const began = performance.now();
  await takeMailbox(server, 'legit');
  await takeMailbox(server, 'attack');
  await server.markLog();
  const adminPort = await freeLoopbackPort();
  const proxy = target === 'proxy'
    ? await startProxyChild({ upstreamPort: server.port, policyFile, spoolDir: join(workDir, `spool-${scenario.id}`), adminPort, name: `proxy (${scenario.id})`, ...profileArgs() })
    : undefined;
  const port = proxy?.port ?? server.port;
  const poller = proxy ? new AdminPoller(adminPort) : undefined;

  // Our own event loop's lag inflates every latency we measure, for A, B and C alike: reported beside them.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const legit: SessionResult[] = [];
  const attack: SessionResult[] = [];
  const flash: SessionResult[] = [];
  let peakHeld: number | undefined;
  // Attacker processes (where the scenario has them) are loaded before the clock starts, each with its own
  // open-files limit; told on stdin when to start and when the legitimate load has ended (cut what is held).
  const attackers = scenario.attack && scenario.processes
    ? await Promise.all(Array.from({ length: scenario.processes }, (_, part) => startBenchChild('bench/flood-attacker.ts',
      [scenario.id, String(port), String(part), String(scenario.processes), String(attackWindowMs)], (result) => attack.push(result), interrupt.signal)))
    : [];
  const legitRun = await startLegitSenders(port, (result) => legit.push(result));
  const legitStartedAtMs = Date.now();
  // Held connections (idle, half-open) outlive the window: the attacker drops each after HOLD_MS or
  // when the server closes it, and what is still held is cut once the legitimate load has ended.
  const legitEnded = new AbortController();
  const holdSignal = AbortSignal.any([legitEnded.signal, interrupt.signal]);
  setMaxListeners(0, holdSignal);
  legitEnded.signal.addEventListener('abort', () => { for (const attacker of attackers) attacker.process.stdin?.write('hold-end\n'); }, { once: true });
  let attackRun: Promise<void> | undefined;
  if (attackers.length > 0) {
    await sleep(attackStartMs);
    poller?.markAttack();
    for (const attacker of attackers) attacker.process.stdin?.write('start\n');
    attackRun = Promise.all(attackers.map((attacker) => attacker.done)).then(() => undefined);
  } else if (scenario.attack) {
    await sleep(attackStartMs);
    const window = new AbortController();
    const attackSignal = AbortSignal.any([window.signal, interrupt.signal]);
    setMaxListeners(0, attackSignal);
    poller?.markAttack();
    const timer = setTimeout(() => window.abort(), attackWindowMs);
    attackRun = scenario.attack({ port, pool, attackSignal, holdSignal, phaseSignal: interrupt.signal, share: { index: 0, count: 1 }, attack: (result) => attack.push(result), flash: (result) => flash.push(result), peakHeld: (count) => { peakHeld = count; } })
      .finally(() => { clearTimeout(timer); window.abort(); });
  }
  await legitRun.done;
  legitEnded.abort();
  await attackRun;
  loopDelay.disable();

  const accepted = (results: SessionResult[]): number => results.filter((result) => result.outcome === 'accepted').length;
  await waitForDelivery(server, { legit: accepted(legit) + accepted(flash), attack: accepted(attack) });
  const timeline = await poller?.stop();
  const legitMail = await takeMailbox(server, 'legit');
  const attackMail = await takeMailbox(server, 'attack');
  const kinds = legitMail.map((message) => messageKind(message.messageId ?? ''));
  const postfixLog = summarisePostfixLog(await server.readLog());

  const result: PhaseResult = {
    scenario: scenario.id,
    title: scenario.title,
    target,
    elapsedSeconds: 0,
    benchLoopLagP99Ms: loopDelay.percentile(99) / 1e6,
    legit: {
      sessions: legit.length, outcomes: tally(legit), delivered: kinds.filter((kind) => kind === 'legit').length,
      p50Ms: percentile(legit, 0.5), p99Ms: percentile(legit, 0.99), slowest: slowestSessions(legit, legitStartedAtMs),
      provenP99Ms: percentile(legit.filter((session) => !session.fresh), 0.99), freshP99Ms: percentile(legit.filter((session) => session.fresh), 0.99),
    },
    postfixLog,
  };
  if (scenario.sends === 'legit') result.flash = { sessions: flash.length, outcomes: tally(flash), delivered: kinds.filter((kind) => kind === 'flash').length };
  if (scenario.attack && scenario.sends !== 'legit') {
    result.attack = { sessions: attack.length, outcomes: tally(attack), delivered: attackMail.length, ...(peakHeld !== undefined ? { peakHeld } : {}) };
    if (scenario.sends === 'spam' && timeline?.detectedAtMs !== undefined) result.attack.afterDetection = afterDetection(attack, attackMail.map((message) => message.mtimeMs), timeline.detectedAtMs);
  }
  if (proxy && timeline) {
    result.proxy = proxySummary(proxy.child, timeline);
    await stopChild(proxy.child);
    const profile = await profileSummary(proxy.child);
    if (profile) progress(`proxy CPU profile (${scenario.id}):\n${profile}`);
  }
  pool.closeAll();
  await sleep(SETTLE_MS);
  result.elapsedSeconds = (performance.now() - began) / 1000;
  return timeline ? { result, samples: timeline.samples } : { result };
}

/**
 * The phase's steady legitimate senders in a child process (bench/flood-legit.ts), so that the
 * attack's sockets in this process never delay their reads.
 */
function startLegitSenders(port: number, record: (result: SessionResult) => void): Promise<BenchChild> {
  const firstFresh = nextFreshSender;
  nextFreshSender += Math.ceil((phaseSeconds * LEGIT_SESSIONS_PER_SECOND) / FRESH_EVERY);
  return startBenchChild('bench/flood-legit.ts', [String(port), String(phaseSeconds), String(firstFresh)], record, interrupt.signal);
}

/** What the proxy said about the phase: its metrics at the end, detection times, its log, whether it died. */
function proxySummary(child: Child, timeline: AdminTimeline): NonNullable<PhaseResult['proxy']> {
  const summary: NonNullable<PhaseResult['proxy']> = { failedPolls: timeline.failedPolls, log: summariseProxyLog(child.stdout(), child.stderr()).slice(0, 10) };
  const final = timeline.final;
  // In observe mode decisions are counted with enforced="false": those were not carried out.
  const actions = final && metricByLabel(final, 'smtp_pushback_actions_total', 'action', (labels) => labels.enforced !== 'false');
  const observed = final && metricByLabel(final, 'smtp_pushback_actions_total', 'action', (labels) => labels.enforced === 'false');
  const verdicts = final && metricByLabel(final, 'smtp_pushback_verdicts_total', 'detector');
  const sessionsByEnd = final && metricByLabel(final, 'smtp_pushback_sessions_total', 'end');
  const quarantined = final && metricTotal(final, 'smtp_pushback_quarantine_entries');
  if (actions) summary.actions = actions;
  if (observed && Object.values(observed).some((count) => count > 0)) summary.notEnforced = observed;
  if (verdicts) summary.verdictsByDetector = verdicts;
  if (sessionsByEnd) summary.sessionsByEnd = sessionsByEnd;
  if (quarantined !== undefined) summary.quarantinedAtEnd = quarantined;
  if (timeline.dangerAfterSeconds !== undefined) summary.dangerAfterSeconds = timeline.dangerAfterSeconds;
  if (timeline.verdictAfterSeconds !== undefined) summary.verdictAfterSeconds = timeline.verdictAfterSeconds;
  if (timeline.verdictsBeforeAttack !== undefined) summary.verdictsBeforeAttack = timeline.verdictsBeforeAttack;
  if (timeline.maxTarpitActive !== undefined) summary.maxTarpitActive = timeline.maxTarpitActive;
  if (child.exited) summary.crashed = `exited ${JSON.stringify(child.exited)}: ${child.stderr().trim().slice(-2_000)}`;
  return summary;
}

/**
 * The shipped config/policy.yaml with only what a benchmark must change: quieter log, XCLIENT
 * required (this Postfix offers it), capacity as shipped (the attack may exceed it). Addresses come from the
 * environment (startProxyChild), so the detection and pushback settings measured are the shipped ones.
 */
function benchPolicy(): { text: string; mode: string } {
  const document = parseDocument(readFileSync(join(ROOT, 'config/policy.yaml'), 'utf8'));
  document.setIn(['log', 'level'], 'warn');
  document.setIn(['upstream', 'xclient'], 'required');
  // BENCH_FLOOD_MAX_CLIENTS: a small cap (e.g. 1000), so the same attack exceeds it several times over.
  if (process.env.BENCH_FLOOD_MAX_CLIENTS) document.setIn(['server', 'maxClients'], positiveNumber('BENCH_FLOOD_MAX_CLIENTS', 1_000));
  const mode = document.get('mode');
  return { text: document.toString(), mode: typeof mode === 'string' ? mode : 'unset (the built-in default)' };
}

/** Where the proxy of a phase spent its CPU (its .cpuprofile, written at exit), when BENCH_FLOOD_PROFILE_DIR is set. */
async function profileSummary(child: Child): Promise<string | undefined> {
  const directory = process.env.BENCH_FLOOD_PROFILE_DIR;
  const pid = String(child.process.pid);
  if (!directory) return undefined;
  const written = readdirSync(directory).find((name) => name.endsWith('.cpuprofile') && name.split('.').includes(pid));
  if (!written) return `  no .cpuprofile from pid ${pid} in ${directory}`;
  const summary = await summariseProfile(join(directory, written), ROOT);
  const row = (entry: SelfTime): string => `  ${entry.sharePercent.toFixed(1).padStart(5)}%  ${entry.selfMs.toFixed(0).padStart(6)} ms  ${entry.where}`;
  return [`  ${join(directory, written)}: busy ${summary.busyMs.toFixed(0)} ms, idle ${summary.idleMs.toFixed(0)} ms; shares are of busy time`,
    '  by area:', ...summary.byArea.map(row), '  top functions by self time:', ...summary.top.map(row)].join('\n');
}

/** --cpu-prof for the proxy when BENCH_FLOOD_PROFILE_DIR names a directory (written when it exits). */
function profileArgs(): { nodeArgs?: string[] } {
  const directory = process.env.BENCH_FLOOD_PROFILE_DIR;
  return directory ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', directory] } : {};
}

function pickScenarios(list: string | undefined): Scenario[] {
  if (!list) return [...SCENARIOS];
  const ids = list.split(',').map((id) => id.trim()).filter(Boolean);
  const unknown = ids.filter((id) => !SCENARIOS.some((scenario) => scenario.id === id));
  if (unknown.length > 0) throw new Error(`BENCH_FLOOD_SCENARIOS: unknown ${unknown.join(', ')}; known: ${SCENARIOS.map((scenario) => scenario.id).join(', ')}`);
  return SCENARIOS.filter((scenario) => ids.includes(scenario.id));
}

function parseArguments(args: string[]): string | undefined {
  let jsonTarget: string | undefined;
  for (let index = 0; index < args.length; index += 1) {
    const [name, inlineValue] = (args[index] as string).split(/=(.*)/s) as [string, string | undefined];
    const next = args[index + 1];
    const takesNext = inlineValue === undefined && next !== undefined && !next.startsWith('--');
    if (name !== '--json') throw new Error(`unexpected argument ${args[index]}; usage: bench/flood.ts [--json [FILE]]`);
    jsonTarget = inlineValue || (takesNext ? next : undefined) || '-';
    if (takesNext) index += 1;
  }
  return jsonTarget;
}
