// Idle capacity of one proxy (bench:idle): N idle client connections held at once, each from its own
// loopback address, and what they cost the proxy, read from its /metrics: heap used (after a full GC
// through the inspector), rss, and the event-loop delay while they are opened and while they are held.
// The proxy runs the shipped config/policy.yaml (log.level warn; upstream.xclient off, since the
// upstream is smtp-sink, which idle clients never reach). Loopback only; every loop is bounded in
// count and in time.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseDocument } from 'yaml';
import { planCapacity, readDescriptorLimit, type DescriptorLimit } from '../src/capacity.js';
import { formatProblem, parsePolicyText } from '../src/config/load.js';
import type { Policy } from '../src/config/schema.js';
import { freeLoopbackPort, startChild, stopChild, waitForGreeting, waitForStdout, type Child } from './children.js';
import { runSession, SocketPool } from './flood-client.js';
import { metricTotal, parseMetrics, summariseProxyLog, type Metrics } from './flood-probe.js';
import { allocationSites, InspectorSession, type AllocationSite, type SamplingHeapProfileNode } from './inspector-client.js';
import { median } from './report.js';
import { ROOT, sleep, startProxyChild, startSink } from './servers.js';

/** The issue's targets: 10,000 idle connections, at most 16 KB of heap each, event-loop delay p99 at most 50 ms. */
export const TARGET_HEAP_PER_CONNECTION_BYTES = 16 * 1024;
export const TARGET_LOOP_P99_MS = 50;

export interface IdleCapacityOptions {
  connections: number;
  /** New connections a second (default 2,000). */
  ratePerSecond?: number;
  /** Handshakes (connect to the greeting, or to the EHLO reply) in flight at most (default 1,000). */
  maxPending?: number;
  /** Where each client falls silent: after the 220 greeting (default; the idle flood) or after its EHLO's 250. */
  idleAfter?: 'greeting' | 'ehlo';
  /** X of the 127.X.0.0/16 the sources come from (default 77). */
  sourceOctet?: number;
  /** Sources per /24 (default 250; must stay below server.maxSessionsPerPrefixV4). */
  perPrefix?: number;
  /** /metrics scrapes of each steady state, idle and held (default 6), this far apart (default 400 ms). */
  samples?: number;
  sampleIntervalMs?: number;
  /** A full GC in the proxy (HeapProfiler.collectGarbage through --inspect) before each steady state (default true). */
  forceGc?: boolean;
  /** The proxy's sampling heap profile: where the memory live while held was allocated (default false). */
  heapProfile?: boolean;
  /** server.maxClients for the proxy (default: unset, as shipped). */
  maxClients?: number;
  /** Raise this process's open-files limit with prlimit (children inherit it) when it is too low (default true). */
  raiseFileLimit?: boolean;
  progress?: (text: string) => void;
  signal?: AbortSignal;
}

export interface LoopDelay {
  /** prom-client's histogram, sampled every 10 ms: an idle loop reads about 10 ms. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface MemorySample {
  /** Seconds since the first connection of the flood was opened (negative before it). */
  atSeconds: number;
  heapUsedBytes: number;
  rssBytes: number;
  externalBytes: number;
  proxySessions: number;
  status: number;
  /** Client side: connections idle (greeted, still open) at this scrape. */
  clientIdle: number;
  /** The proxy's event-loop delay since the previous scrape. */
  loop: LoopDelay;
}

export interface IdleCapacityResult {
  connections: number;
  idleAfter: 'greeting' | 'ehlo';
  ratePerSecond: number;
  sources: { network: string; prefixes: number; perPrefix: number };
  proxy: {
    maxClients: number;
    /** The proxy's open-files limit after it raised its soft limit. */
    openFilesLimit: number | null;
    loweredByFileLimit: boolean;
    maxSessionsPerAddress: number;
    maxSessionsPerPrefixV4: number;
    stressIdleTimeoutSeconds: number;
    /** Warn-level and worse lines of the proxy's log, most frequent first. */
    log: string[];
  };
  forcedGc: boolean;
  opening: {
    elapsedSeconds: number;
    connected: number;
    /** Reached the idle state: greeted (and, with idleAfter "ehlo", answered 250). */
    idle: number;
    /** Why the others did not, e.g. {"EMFILE": 3, "greeting 421": 10}. */
    failures: Record<string, number>;
    /** Most handshakes in flight at once (bounded by maxPending): near it, the proxy's greetings set the pace. */
    peakPending: number;
    /** The proxy's event-loop delay while the connections were being opened. */
    loop: LoopDelay | null;
    benchLoopP99Ms: number;
  };
  idle: { samples: MemorySample[]; heapUsedBytes: number; rssBytes: number; externalBytes: number };
  held: {
    samples: MemorySample[];
    heapUsedBytes: number;
    rssBytes: number;
    externalBytes: number;
    /** Connections held, from the proxy's smtp_pushback_sessions_active (median of the samples, less the idle state's). */
    connections: number;
    /** Client side, the fewest idle connections at any held sample. */
    clientIdleMin: number;
    /** Closed by the proxy after reaching the idle state, by the end of the held samples. */
    closedByProxy: number;
    reply421: number;
    /** Worst of the held intervals: the p99 of the interval with the highest p99, and the largest max. */
    loop: LoopDelay;
    benchLoopP99Ms: number;
  };
  perConnection: { heapBytes: number; rssBytes: number; externalBytes: number };
  afterClose: { proxySessions: number; heapUsedBytes: number; seconds: number } | null;
  allocationSites?: AllocationSite[];
  targets: Array<{ name: string; value: number; limit: number; unit: string; pass: boolean; note?: string }>;
  elapsedSeconds: number;
}

const METRIC = {
  heapUsed: 'nodejs_heap_size_used_bytes',
  rss: 'process_resident_memory_bytes',
  external: 'nodejs_external_memory_bytes',
  lagP50: 'nodejs_eventloop_lag_p50_seconds',
  lagP99: 'nodejs_eventloop_lag_p99_seconds',
  lagMax: 'nodejs_eventloop_lag_max_seconds',
  sessions: 'smtp_pushback_sessions_active',
  status: 'smtp_pushback_status',
} as const;

/** Descriptors this process needs besides its client sockets: Node's own, pipes to children, scrapes. */
const OWN_DESCRIPTORS = 256;
const SETTLE_MS = 15_000;
const SCRAPE_TIMEOUT_MS = 10_000;
const WARM_UP_SESSIONS = 16;
const WARM_UP_IDLE = 40;

export async function measureIdleCapacity(options: IdleCapacityOptions): Promise<IdleCapacityResult> {
  const began = performance.now();
  const settings = {
    connections: options.connections,
    rate: options.ratePerSecond ?? 2_000,
    maxPending: options.maxPending ?? 1_000,
    idleAfter: options.idleAfter ?? 'greeting',
    octet: options.sourceOctet ?? 77,
    perPrefix: options.perPrefix ?? 250,
    samples: options.samples ?? 6,
    sampleIntervalMs: options.sampleIntervalMs ?? 400,
    forceGc: options.forceGc ?? true,
    heapProfile: options.heapProfile ?? false,
  } as const;
  const progress = options.progress ?? (() => undefined);
  const signal = options.signal ?? new AbortController().signal;
  const prefixes = Math.ceil(settings.connections / settings.perPrefix);
  if (!Number.isInteger(settings.connections) || settings.connections < 1) throw new Error(`connections must be a positive integer, got ${settings.connections}`);
  if (settings.perPrefix < 1 || settings.perPrefix > 254) throw new Error(`perPrefix must be 1-254, got ${settings.perPrefix}`);
  // The last /24 (127.X.255.0) holds the warm-up clients.
  if (prefixes > 255) throw new Error(`${settings.connections} connections at ${settings.perPrefix} per /24 need ${prefixes} /24s; 127.${settings.octet}.0.0/16 has 255 for the flood`);

  const workDir = mkdtempSync(join(os.tmpdir(), 'bench-idle-'));
  const pool = new SocketPool();
  const children: Child[] = [];
  let inspector: InspectorSession | undefined;
  try {
    const { text: policyText, policy } = benchPolicy(options.maxClients);
    if (settings.perPrefix > policy.server.maxSessionsPerPrefixV4) {
      throw new Error(`perPrefix ${settings.perPrefix} exceeds server.maxSessionsPerPrefixV4 ${policy.server.maxSessionsPerPrefixV4}: the proxy would refuse the rest of each /24`);
    }
    const policyFile = join(workDir, 'policy.yaml');
    writeFileSync(policyFile, policyText);
    ensureFileLimit(settings.connections, policy, options.raiseFileLimit ?? true, progress);

    const sink = await startUpstream();
    children.push(sink.child);
    const adminPort = await freeLoopbackPort();
    const inspectPort = settings.forceGc || settings.heapProfile ? await freeLoopbackPort() : undefined;
    const proxy = await startProxyChild({
      upstreamPort: sink.port, policyFile, spoolDir: join(workDir, 'spool'), adminPort, name: 'proxy',
      ...(inspectPort ? { nodeArgs: [`--inspect=127.0.0.1:${inspectPort}`] } : {}),
    });
    children.push(proxy.child);
    const crashed = (): void => {
      if (proxy.child.exited) throw new Error(`the proxy exited (${JSON.stringify(proxy.child.exited)}): ${proxy.child.stderr().trim().slice(-2_000)}`);
    };
    const proxyLimit = proxy.child.process.pid === undefined ? undefined : descriptorLimitOf(proxy.child.process.pid);
    const capacity = proxyLimit ? planCapacity(policy.server.maxClients, proxyLimit, { admin: policy.admin.maxConnections, upstream: policy.upstream.maxConnections + policy.quarantine.release.concurrency }) : { maxClients: policy.server.maxClients ?? 20_000, lowered: false };
    progress(`proxy on 127.0.0.1:${proxy.port} (admin ${adminPort}${inspectPort ? `, inspector ${inspectPort}` : ''}), smtp-sink upstream on ${sink.port}; maxClients ${capacity.maxClients}`
      + (proxyLimit ? ` with open files limit ${proxyLimit.soft}` : '') + (capacity.lowered ? ' (LOWERED by the open files limit: not the shipped 20,000)' : ''));
    const evictAbove = Math.floor((capacity.maxClients * policy.server.evictAbovePercent) / 100);
    if (settings.connections > evictAbove) progress(`warning: ${settings.connections} connections exceed ${policy.server.evictAbovePercent} % of maxClients (${evictAbove}): the proxy will evict some`);

    if (inspectPort) inspector = await InspectorSession.connect(inspectPort);
    const scrape = async (floodStartedMs: number | undefined, clientIdle: number): Promise<MemorySample> => {
      crashed();
      const metrics = await readMetrics(adminPort);
      const value = (name: string): number => {
        const found = metricTotal(metrics, name);
        if (found === undefined) throw new Error(`${name} missing from the proxy's /metrics`);
        return found;
      };
      return {
        atSeconds: floodStartedMs === undefined ? 0 : (performance.now() - floodStartedMs) / 1000,
        heapUsedBytes: value(METRIC.heapUsed),
        rssBytes: value(METRIC.rss),
        externalBytes: value(METRIC.external),
        proxySessions: value(METRIC.sessions),
        status: value(METRIC.status),
        clientIdle,
        loop: { p50Ms: value(METRIC.lagP50) * 1000, p99Ms: value(METRIC.lagP99) * 1000, maxMs: value(METRIC.lagMax) * 1000 },
      };
    };
    const collectGarbage = async (): Promise<void> => {
      if (!inspector || !settings.forceGc) return;
      await inspector.send('HeapProfiler.collectGarbage');
    };
    const steadyState = async (floodStartedMs: number | undefined, clientIdle: () => number): Promise<MemorySample[]> => {
      await collectGarbage();
      // This scrape's loop delay covers the GC just forced: only the following intervals count.
      await scrape(floodStartedMs, clientIdle());
      const samples: MemorySample[] = [];
      for (let index = 0; index < settings.samples && !signal.aborted; index += 1) {
        await sleep(settings.sampleIntervalMs);
        samples.push(await scrape(floodStartedMs, clientIdle()));
      }
      return samples;
    };

    progress(`warm-up: ${WARM_UP_SESSIONS} complete sessions and ${WARM_UP_IDLE} idle connections that then say QUIT`);
    await warmUp(proxy.port, settings.octet, pool, signal);
    crashed();
    await sleep(1_000);
    const idleSamples = await steadyState(undefined, () => 0);
    const idleState = summarise(idleSamples);
    progress(`idle: heap ${mb(idleState.heapUsedBytes)}, rss ${mb(idleState.rssBytes)}, ${idleSamples.at(-1)?.proxySessions ?? '?'} sessions, status ${idleSamples.at(-1)?.status ?? '?'}`);

    if (inspector && settings.heapProfile) await inspector.send('HeapProfiler.startSampling', { samplingInterval: 4_096 });
    const fleet = new IdleFleet(proxy.port, settings.idleAfter, pool, signal);
    const benchLoop = monitorEventLoopDelay({ resolution: 10 });
    // Resets the proxy's loop histogram: the next scrape covers the opening alone.
    await scrape(undefined, 0);
    progress(`opening ${settings.connections} connections from 127.${settings.octet}.0.0/16 (${prefixes} /24s x ${settings.perPrefix}) at ${settings.rate}/s ...`);
    benchLoop.enable();
    const floodStartedMs = performance.now();
    await fleet.openAll(settings.connections, settings.rate, settings.maxPending, (index) => sourceAddress(settings.octet, settings.perPrefix, index));
    const openedMs = performance.now();
    const openingLoop = await scrape(floodStartedMs, fleet.idleNow).then((sample) => sample.loop, () => null);
    benchLoop.disable();
    const openingBenchP99 = benchLoop.percentile(99) / 1e6;
    progress(`opened in ${((openedMs - floodStartedMs) / 1000).toFixed(1)} s: ${fleet.connected} connected, ${fleet.reachedIdle} idle${formatFailures(fleet.failures)}`);
    if (fleet.failures.EMFILE) progress(`EMFILE: this process ran out of file descriptors; run under a higher limit (ulimit -n ${settings.connections + OWN_DESCRIPTORS * 4})`);

    benchLoop.reset();
    benchLoop.enable();
    const heldSamples = await steadyState(floodStartedMs, () => fleet.idleNow);
    benchLoop.disable();
    let sites: AllocationSite[] | undefined;
    if (inspector && settings.heapProfile) {
      const { profile } = await inspector.send<{ profile: { head: SamplingHeapProfileNode } }>('HeapProfiler.getSamplingProfile');
      await inspector.send('HeapProfiler.stopSampling');
      sites = allocationSites(profile.head, ROOT);
    }
    const heldState = summarise(heldSamples);
    const closedByProxy = fleet.closedAfterIdle;
    const reply421 = fleet.reply421;
    const heldConnections = Math.max(0, (median(heldSamples.map((sample) => sample.proxySessions)) ?? 0) - (idleSamples.at(-1)?.proxySessions ?? 0));
    const divisor = Math.max(1, heldConnections);
    const perConnection = {
      heapBytes: (heldState.heapUsedBytes - idleState.heapUsedBytes) / divisor,
      rssBytes: (heldState.rssBytes - idleState.rssBytes) / divisor,
      externalBytes: (heldState.externalBytes - idleState.externalBytes) / divisor,
    };
    const worstP99 = heldSamples.reduce((worst, sample) => (sample.loop.p99Ms > worst.p99Ms ? sample.loop : worst), { p50Ms: 0, p99Ms: 0, maxMs: 0 });
    const heldLoop = { p50Ms: median(heldSamples.map((sample) => sample.loop.p50Ms)) ?? 0, p99Ms: worstP99.p99Ms, maxMs: Math.max(0, ...heldSamples.map((sample) => sample.loop.maxMs)) };
    progress(`held: heap ${mb(heldState.heapUsedBytes)}, rss ${mb(heldState.rssBytes)}, ${heldConnections} sessions; ${(perConnection.heapBytes / 1024).toFixed(1)} KB heap per connection`);

    // Closed all at once (RST): the proxy must let every session go, and its heap return.
    pool.closeAll();
    const closeStarted = performance.now();
    let afterClose: IdleCapacityResult['afterClose'] = null;
    for (const deadline = closeStarted + SETTLE_MS; performance.now() < deadline && !signal.aborted;) {
      await sleep(250);
      const sample = await scrape(floodStartedMs, 0);
      if (sample.proxySessions <= (idleSamples.at(-1)?.proxySessions ?? 0) || performance.now() >= deadline - 250) {
        await collectGarbage();
        const collected = await scrape(floodStartedMs, 0);
        afterClose = { proxySessions: collected.proxySessions, heapUsedBytes: collected.heapUsedBytes, seconds: (performance.now() - closeStarted) / 1000 };
        break;
      }
    }
    crashed();
    inspector?.close();
    inspector = undefined;
    await stopChild(proxy.child);
    const log = summariseProxyLog(proxy.child.stdout(), proxy.child.stderr()).filter((line) => !/Debugger (listening|attached|ending)|For help, see: https:\/\/nodejs.org\/en\/docs\/inspector|Waiting for the debugger/.test(line)).slice(0, 10);

    const targets = [
      { name: 'heap per connection', value: perConnection.heapBytes / 1024, limit: TARGET_HEAP_PER_CONNECTION_BYTES / 1024, unit: 'KB', pass: perConnection.heapBytes <= TARGET_HEAP_PER_CONNECTION_BYTES },
      { name: 'event-loop delay p99 while holding', value: heldLoop.p99Ms, limit: TARGET_LOOP_P99_MS, unit: 'ms', pass: heldLoop.p99Ms <= TARGET_LOOP_P99_MS },
      {
        name: 'idle connections held at once', value: heldConnections, limit: settings.connections, unit: '', pass: heldConnections >= settings.connections,
        ...(settings.connections > evictAbove ? { note: `maxClients ${capacity.maxClients}${capacity.lowered ? ` (lowered by the open files limit ${proxyLimit?.soft})` : ''}: the proxy evicts above ${evictAbove}` } : {}),
      },
    ];
    return {
      connections: settings.connections,
      idleAfter: settings.idleAfter,
      ratePerSecond: settings.rate,
      sources: { network: `127.${settings.octet}.0.0/16`, prefixes, perPrefix: settings.perPrefix },
      proxy: {
        maxClients: capacity.maxClients,
        openFilesLimit: proxyLimit?.soft ?? null,
        loweredByFileLimit: capacity.lowered === true,
        maxSessionsPerAddress: policy.server.maxSessionsPerAddress,
        maxSessionsPerPrefixV4: policy.server.maxSessionsPerPrefixV4,
        stressIdleTimeoutSeconds: policy.pushback.stressIdleTimeoutSeconds,
        log,
      },
      forcedGc: inspectPort !== undefined && settings.forceGc,
      opening: {
        elapsedSeconds: (openedMs - floodStartedMs) / 1000,
        connected: fleet.connected,
        idle: fleet.reachedIdle,
        failures: fleet.failures,
        peakPending: fleet.peakPending,
        loop: openingLoop,
        benchLoopP99Ms: openingBenchP99,
      },
      idle: { samples: idleSamples, ...idleState },
      held: {
        samples: heldSamples, ...heldState, connections: heldConnections,
        clientIdleMin: Math.min(...heldSamples.map((sample) => sample.clientIdle)),
        closedByProxy, reply421, loop: heldLoop, benchLoopP99Ms: benchLoop.percentile(99) / 1e6,
      },
      perConnection,
      afterClose,
      ...(sites ? { allocationSites: sites } : {}),
      targets,
      elapsedSeconds: (performance.now() - began) / 1000,
    };
  } finally {
    inspector?.close();
    pool.closeAll();
    for (const child of children.reverse()) await stopChild(child);
    rmSync(workDir, { recursive: true, force: true });
  }
}

/** The clients: each connects from its own address, takes the greeting (and EHLO's 250), then says nothing. */
class IdleFleet {
  connected = 0;
  reachedIdle = 0;
  /** Idle now: reached the idle state and still open. */
  idleNow = 0;
  closedAfterIdle = 0;
  reply421 = 0;
  pending = 0;
  peakPending = 0;
  readonly failures: Record<string, number> = {};

  constructor(private readonly port: number, private readonly idleAfter: 'greeting' | 'ehlo', private readonly pool: SocketPool, private readonly signal: AbortSignal) {}

  /**
   * Opens `count` connections at `rate` a second with at most `maxPending` handshakes in flight,
   * then waits for the handshakes still in flight; bounded by a deadline either way.
   */
  async openAll(count: number, rate: number, maxPending: number, address: (index: number) => string): Promise<void> {
    const started = performance.now();
    const deadline = started + (count / rate) * 3_000 + SETTLE_MS;
    let opened = 0;
    while (opened < count && performance.now() < deadline && !this.signal.aborted) {
      const due = Math.min(count, Math.floor(((performance.now() - started) * rate) / 1000) + 1);
      while (opened < due && this.pending < maxPending) this.open(address(opened++));
      await sleep(5);
    }
    if (opened < count) this.fail('not opened (deadline)', count - opened);
    const settleBy = Math.min(deadline + SETTLE_MS, performance.now() + SETTLE_MS);
    while (this.pending > 0 && performance.now() < settleBy && !this.signal.aborted) await sleep(20);
    if (this.pending > 0) this.fail('handshake unfinished', this.pending);
  }

  private fail(reason: string, count = 1): void {
    this.failures[reason] = (this.failures[reason] ?? 0) + count;
  }

  private open(localAddress: string): void {
    const socket = net.connect({ host: '127.0.0.1', port: this.port, localAddress });
    this.pool.add(socket);
    this.pending += 1;
    if (this.pending > this.peakPending) this.peakPending = this.pending;
    let stage: 'connecting' | 'greeting' | 'ehlo' | 'idle' | 'done' = 'connecting';
    let partial = '';
    const settle = (reason?: string): void => {
      if (stage === 'idle' || stage === 'done') return;
      this.pending -= 1;
      if (reason) {
        stage = 'done';
        this.fail(reason);
        socket.destroy();
        return;
      }
      stage = 'idle';
      this.reachedIdle += 1;
      this.idleNow += 1;
    };
    socket.once('connect', () => {
      this.connected += 1;
      stage = 'greeting';
    });
    socket.on('data', (chunk: Buffer) => {
      partial += chunk.toString('latin1');
      let newline: number;
      while ((newline = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, newline);
        partial = partial.slice(newline + 1);
        const reply = /^(\d{3})( |\r|$)/.exec(line);
        if (!reply) continue; // a continuation line (250-...) or noise
        const code = Number(reply[1]);
        if (stage === 'greeting') {
          if (code !== 220) settle(`greeting ${code}`);
          else if (this.idleAfter === 'ehlo') {
            stage = 'ehlo';
            socket.write(`EHLO idle-${localAddress.replaceAll('.', '-')}.example\r\n`);
          } else settle();
        } else if (stage === 'ehlo') {
          settle(code === 250 ? undefined : `EHLO ${code}`);
        } else if (stage === 'idle' && code === 421) this.reply421 += 1;
      }
      if (partial.length > 4_096) partial = partial.slice(-4_096);
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (stage === 'connecting' || stage === 'greeting' || stage === 'ehlo') settle(error.code ?? error.message);
    });
    socket.on('close', () => {
      if (stage === 'idle') {
        this.idleNow -= 1;
        this.closedAfterIdle += 1;
      } else settle(stage === 'connecting' ? 'closed before connect' : `closed before the ${stage === 'ehlo' ? 'EHLO reply' : 'greeting'}`);
      stage = 'done';
    });
  }
}

/**
 * A few complete sessions and a few idle connections that then say QUIT, from the last /24 of the
 * range, so code paths, pools and caches the flood uses exist before the idle heap is read. Few
 * enough that the status stays safe (each pair is answered).
 */
async function warmUp(port: number, octet: number, pool: SocketPool, signal: AbortSignal): Promise<void> {
  const plan = { heloName: 'warm-up.example', from: 'warm@up.example', to: 'sink@sink.example', lines: ['Subject: warm-up', '', 'warm-up'] };
  for (let index = 0; index < WARM_UP_SESSIONS; index += 4) {
    await Promise.all([0, 1, 2, 3].map((offset) =>
      runSession({ port, localAddress: `127.${octet}.255.${1 + index + offset}` }, plan, { replyTimeoutMs: 5_000, deadlineMs: performance.now() + 10_000 }, pool, signal)));
  }
  await Promise.all(Array.from({ length: WARM_UP_IDLE }, (_, index) => greetThenQuit(port, `127.${octet}.255.${100 + index}`, 1_000)));
}

function greetThenQuit(port: number, localAddress: string, holdMs: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    const timer = setTimeout(() => socket.destroy(), holdMs + 5_000);
    let greeted = false;
    socket.on('data', (chunk: Buffer) => {
      if (!greeted && chunk.toString('latin1').startsWith('220')) {
        greeted = true;
        setTimeout(() => socket.write('QUIT\r\n'), holdMs);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** 127.X.(index / perPrefix).(1 + index % perPrefix): perPrefix sources per /24, one connection each. */
export function sourceAddress(octet: number, perPrefix: number, index: number): string {
  return `127.${octet}.${Math.floor(index / perPrefix)}.${1 + (index % perPrefix)}`;
}

/** The shipped config/policy.yaml, with only what this benchmark must change, and the policy it gives. */
function benchPolicy(maxClients: number | undefined): { text: string; policy: Policy } {
  const document = parseDocument(readFileSync(join(ROOT, 'config/policy.yaml'), 'utf8'));
  document.setIn(['log', 'level'], 'warn');
  // smtp-sink offers no XCLIENT; idle clients never reach it, the warm-up's few messages do.
  document.setIn(['upstream', 'xclient'], 'off');
  if (maxClients !== undefined) document.setIn(['server', 'maxClients'], maxClients);
  const text = document.toString();
  const parsed = parsePolicyText(text, 'bench policy', {});
  if (!parsed.ok) throw new Error(`bench policy refused: ${parsed.problems.map(formatProblem).join('; ')}`);
  return { text, policy: parsed.policy };
}

/**
 * This process holds every client socket, and the proxy (its child, which inherits the limit and
 * raises its soft limit to the hard one) needs 2 descriptors per session of maxClients: raise the
 * limits with prlimit when allowed (root), else say what is missing.
 */
function ensureFileLimit(connections: number, policy: Policy, allowed: boolean, progress: (text: string) => void): void {
  const current = readDescriptorLimit();
  if (!current) return;
  const proxyNeeds = planCapacity(policy.server.maxClients, { soft: Number.MAX_SAFE_INTEGER, hard: Number.MAX_SAFE_INTEGER }, { admin: policy.admin.maxConnections, upstream: policy.upstream.maxConnections + policy.quarantine.release.concurrency }).descriptorsNeeded;
  const ownNeeds = connections + OWN_DESCRIPTORS;
  const wanted = Math.max(proxyNeeds, ownNeeds);
  if (current.soft >= wanted) return;
  let systemMax = Number.MAX_SAFE_INTEGER;
  try {
    systemMax = Number(readFileSync('/proc/sys/fs/nr_open', 'utf8').trim());
  } catch {
    // Not Linux: prlimit is not there either.
  }
  const target = Math.min(Math.max(wanted, current.hard), systemMax);
  if (allowed) {
    try {
      const soft = Math.min(Math.max(wanted, current.soft), target);
      execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${soft}:${target}`], { stdio: 'ignore', timeout: 2_000 });
    } catch {
      // Not permitted (raising the hard limit needs CAP_SYS_RESOURCE): reported below.
    }
  }
  const after = readDescriptorLimit() ?? current;
  if (after.soft !== current.soft || after.hard !== current.hard) progress(`open files limit raised from ${describeLimit(current)} to ${describeLimit(after)} (prlimit)`);
  if (after.soft < ownNeeds) {
    throw new Error(`open files limit ${describeLimit(after)} cannot hold ${connections} client sockets (${ownNeeds} descriptors): run under \`ulimit -n ${wanted}\` (or as root, which raises it)`);
  }
  if (after.hard < proxyNeeds) {
    const fits = planCapacity(undefined, after, { admin: policy.admin.maxConnections, upstream: policy.upstream.maxConnections + policy.quarantine.release.concurrency }).maxClients;
    progress(`warning: open files limit ${describeLimit(after)} (soft/hard) is below the ${proxyNeeds} descriptors the proxy's maxClients ${policy.server.maxClients ?? 20_000} needs`
      + ` (2 a session), and raising the hard limit needs root with CAP_SYS_RESOURCE: the proxy will lower maxClients to ${fits}`
      + ` and evict above ${Math.floor((fits * policy.server.evictAbovePercent) / 100)} (run under \`ulimit -n ${proxyNeeds}\` for the shipped capacity)`);
  }
}

function describeLimit(limit: DescriptorLimit): string {
  return `${limit.soft}/${limit.hard}`;
}

/** The open-files limit of another process, from /proc/PID/limits. */
function descriptorLimitOf(pid: number): DescriptorLimit | undefined {
  try {
    const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    if (!match) return undefined;
    const value = (field: string): number => (field === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(field));
    return { soft: value(match[1] as string), hard: value(match[2] as string) };
  } catch {
    return undefined;
  }
}

/** smtp-sink when installed (Postfix's), else the bare smtp-server of bench/bare-server.ts. */
async function startUpstream(): Promise<{ child: Child; port: number }> {
  if (existsSync('/usr/sbin/smtp-sink')) return startSink(false);
  const child = startChild('bare smtp-server', process.execPath, ['--import', 'tsx', join(ROOT, 'bench/bare-server.ts'), '0'], { cwd: ROOT });
  const port = Number(await waitForStdout(child, (line) => /^\{"listening":(\d+)\}$/.exec(line.trim())?.[1]));
  await waitForGreeting(port, child);
  return { child, port };
}

async function readMetrics(adminPort: number): Promise<Metrics> {
  const response = await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS) });
  if (!response.ok) throw new Error(`/metrics answered HTTP ${response.status}`);
  return parseMetrics(await response.text());
}

function summarise(samples: readonly MemorySample[]): { heapUsedBytes: number; rssBytes: number; externalBytes: number } {
  const of = (pick: (sample: MemorySample) => number): number => median(samples.map(pick)) ?? Number.NaN;
  return { heapUsedBytes: of((sample) => sample.heapUsedBytes), rssBytes: of((sample) => sample.rssBytes), externalBytes: of((sample) => sample.externalBytes) };
}

function formatFailures(failures: Record<string, number>): string {
  const entries = Object.entries(failures);
  return entries.length === 0 ? '' : `; not idle: ${entries.map(([reason, count]) => `${count} ${reason}`).join(', ')}`;
}

export function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
