// What the flood benchmark sends: the steady legitimate senders of every phase, and the attack of
// each scenario (abandoned handshakes, a botnet, early talkers, a one-source spam burst, a flash
// crowd). Every loop is bounded in count and in time; sources are distinct loopback addresses,
// which Linux routes on 127.0.0.0/8 without any setup.
import { setMaxListeners } from 'node:events';
import { holdHalfOpen, holdIdle, runSession, type MessagePlan, type SessionResult, type SocketPool } from './flood-client.js';

export const LEGIT_SESSIONS_PER_SECOND = 10;
/** The proven senders: 127.0.0.2 to 127.0.0.11, one session each in turn. */
export const LEGIT_ADDRESS_COUNT = 10;
/** A legitimate session that has not delivered within this is counted as failed. */
export const LEGIT_DEADLINE_MS = 15_000;
const ATTACK_REPLY_TIMEOUT_MS = 15_000;
/** An idle or half-open attack connection is dropped by its attacker after this, if the server has not closed it. */
const HOLD_MS = 60_000;

// The idle flood is free to exceed every cap the proxy ships with (maxClients, the per-/24 limits):
// 10,000 addresses, 1,500 new connections a second (BENCH_FLOOD_ABANDON_PER_SECOND), from
// ABANDON_PROCESSES processes of up to 15,000 sockets each, so that more can be held at once than
// one process may open (the open-files limit also sizes the proxy's default maxClients). The demo
// (demo/demo.ts) runs one or more of these processes, and describes the flood from these numbers.
export const ABANDON = { addresses: 10_000, concurrency: 45_000, perSecond: positiveEnv('BENCH_FLOOD_ABANDON_PER_SECOND', 1_500), total: 200_000 };
export const ABANDON_PROCESSES = 3;
// Half-open transactions: EHLO, MAIL, RCPT, silence, each holding a Postfix smtpd process, from
// thousands of addresses, far more at once than Postfix's 100 processes.
const HALF_OPEN = { addresses: 5_000, concurrency: 3_000, perSecond: 300, total: 20_000 };
// One address opening 1,000 connections at once, each held idle.
const ONE_ADDRESS = { source: '127.7.0.1', connections: 1_000, perSecond: 1_000 };
const BOTNET = { subnets: [1, 2, 3], perSecond: 100, concurrency: 300 };
const EARLY = { addresses: 1_000, perSecond: 100, concurrency: 300 };
const BURST = { source: '127.4.0.1', concurrency: 50, total: 20_000 };
const FLASH = { addresses: 1_000, perSecond: 250, concurrency: 400 };

export interface ScenarioContext {
  port: number;
  pool: SocketPool;
  /** Aborted when the attack window closes: launching stops and attack sockets still open are cut. */
  attackSignal: AbortSignal;
  /**
   * Aborted when the phase's legitimate load has ended: connections still held (idle, half-open) are
   * cut then. Until that, each is held until the server closes it or HOLD_MS passes.
   */
  holdSignal: AbortSignal;
  /** Aborted only when the whole benchmark is interrupted. */
  phaseSignal: AbortSignal;
  attack(result: SessionResult): void;
  flash(result: SessionResult): void;
  /** The most connections the attack held greeted at once, where the scenario counts it. */
  peakHeld(count: number): void;
  /** This process's part of an attack run by several (Scenario.processes): rates and counts are divided. */
  share: { index: number; count: number };
}

export interface Scenario {
  id: string;
  title: string;
  /** What the attack's sessions send: spam to attack@, legitimate mail to legit@ (the flash crowd), or nothing. */
  sends: 'nothing' | 'spam' | 'legit';
  /** Absent for the baseline: legitimate senders only. */
  attack?: (context: ScenarioContext) => Promise<void>;
  /** Attacker processes (bench/flood-attacker.ts) that share the attack; absent: it runs in the benchmark's own. */
  processes?: number;
}

export const SCENARIOS: readonly Scenario[] = [
  { id: 'baseline', title: 'no attack: legitimate senders only', sends: 'nothing' },
  {
    id: 'abandon',
    sends: 'nothing',
    title: `abandoned handshakes: ${ABANDON.addresses} addresses in 127.1.0.0/16, ${ABANDON.perSecond}/s up to ${ABANDON.concurrency} idle connections at once `
      + `(${ABANDON_PROCESSES} attacker processes), launched while the window lasts, each held until the server closes it or for ${HOLD_MS / 1000} s`,
    processes: ABANDON_PROCESSES,
    attack: (context) => {
      const { index: part, count } = context.share;
      return launchAtRate(ABANDON.perSecond / count, Math.floor(ABANDON.total / count), Math.floor(ABANDON.concurrency / count), context.attackSignal, async (index) => {
        const endpoint = { port: context.port, localAddress: address(1, (index * count + part) % ABANDON.addresses) };
        context.attack(await holdIdle(endpoint, context.pool, heldUntil(context)));
      });
    },
  },
  {
    id: 'halfopen',
    sends: 'nothing',
    title: `half-open transactions: ${HALF_OPEN.addresses} addresses in 127.6.0.0/16, ${HALF_OPEN.perSecond}/s up to ${HALF_OPEN.concurrency} at once, `
      + `each EHLO, MAIL, RCPT, then silent until the server closes it or for ${HOLD_MS / 1000} s`,
    attack: (context) => launchAtRate(HALF_OPEN.perSecond, HALF_OPEN.total, HALF_OPEN.concurrency, context.attackSignal, async (index) => {
      const endpoint = { port: context.port, localAddress: address(6, index % HALF_OPEN.addresses) };
      const plan = { heloName: `host${index}.half-open.example`, from: `bot${index}@half-open.example`, to: 'attack@example.test' };
      context.attack(await holdHalfOpen(endpoint, plan, context.pool, heldUntil(context)));
    }),
  },
  {
    id: 'oneaddr',
    sends: 'nothing',
    title: `one address: ${ONE_ADDRESS.source} opens ${ONE_ADDRESS.connections} connections at once and holds each idle`,
    attack: async (context) => {
      let held = 0;
      let peak = 0;
      const hooks = { greeted: () => { held += 1; peak = Math.max(peak, held); }, ended: () => { held -= 1; } };
      await launchAtRate(ONE_ADDRESS.perSecond, ONE_ADDRESS.connections, ONE_ADDRESS.connections, context.attackSignal, async () => {
        context.attack(await holdIdle({ port: context.port, localAddress: ONE_ADDRESS.source }, context.pool, heldUntil(context), hooks));
      });
      context.peakHeld(peak);
    },
  },
  {
    id: 'botnet',
    sends: 'spam',
    title: `botnet: one spam session from each address of 127.2.1.0/24, 127.2.2.0/24, 127.2.3.0/24 (${BOTNET.subnets.length * 254} sessions, ${BOTNET.perSecond}/s)`,
    attack: (context) => launchAtRate(BOTNET.perSecond, BOTNET.subnets.length * 254, BOTNET.concurrency, context.attackSignal, async (index) => {
      const localAddress = `127.2.${BOTNET.subnets[Math.floor(index / 254)]}.${(index % 254) + 1}`;
      context.attack(await spamSession(context, localAddress, 'botnet', index, false));
    }),
  },
  {
    id: 'early',
    sends: 'spam',
    title: `early talkers: EHLO before the greeting, then a spam session, from ${EARLY.addresses} addresses in 127.3.0.0/16 (${EARLY.perSecond}/s)`,
    attack: (context) => launchAtRate(EARLY.perSecond, EARLY.addresses, EARLY.concurrency, context.attackSignal, async (index) => {
      context.attack(await spamSession(context, address(3, index), 'early', index, true));
    }),
  },
  {
    id: 'burst',
    sends: 'spam',
    title: `spam burst: ${BURST.source} alone, complete sessions as fast as ${BURST.concurrency} concurrent connections go (at most ${BURST.total})`,
    attack: async (context) => {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (!context.attackSignal.aborted && next < BURST.total) {
          const index = next++;
          context.attack(await spamSession(context, BURST.source, 'burst', index, false));
        }
      };
      await Promise.all(Array.from({ length: BURST.concurrency }, worker));
    },
  },
  {
    id: 'flash',
    sends: 'legit',
    title: `flash crowd: ${FLASH.addresses} new legitimate senders in 127.5.0.0/16, one message each to legit@ (${FLASH.perSecond}/s)`,
    attack: (context) => launchAtRate(FLASH.perSecond, FLASH.addresses, FLASH.concurrency, context.attackSignal, async (index) => {
      // Legitimate mail: once started, a session runs to its own deadline, past the attack window.
      const plan = message('flash', index, 'legit@example.test', `sender${index}@crowd.example`);
      const limits = { replyTimeoutMs: LEGIT_DEADLINE_MS, deadlineMs: performance.now() + LEGIT_DEADLINE_MS };
      context.flash(await runSession({ port: context.port, localAddress: address(5, index) }, plan, limits, context.pool, context.phaseSignal));
    }),
  },
];

/** Every FRESH_EVERY-th steady session comes from an address no target has seen (127.8.0.0/16). */
export const FRESH_EVERY = 5;

/**
 * The steady legitimate load of every phase: LEGIT_SESSIONS_PER_SECOND for `seconds`. Most sessions
 * come from the proven senders (127.0.0.2-11, one message each in turn); every FRESH_EVERY-th from a
 * sender never seen before, numbered from `firstFresh` so no two phases share one: it waits what a
 * new client waits (the proxy's early-talker wait, postscreen's pregreet test).
 */
export async function runSteadyLegit(
  port: number, seconds: number, firstFresh: number, pool: SocketPool, signal: AbortSignal, record: (result: SessionResult) => void,
): Promise<void> {
  const total = Math.round(seconds * LEGIT_SESSIONS_PER_SECOND);
  // Concurrency bounded by the deadline: at most rate x deadline sessions can be open at once.
  const concurrency = Math.ceil(LEGIT_SESSIONS_PER_SECOND * (LEGIT_DEADLINE_MS / 1000)) + 1;
  await launchAtRate(LEGIT_SESSIONS_PER_SECOND, total, concurrency, signal, async (index) => {
    const fresh = index % FRESH_EVERY === FRESH_EVERY - 1;
    const freshIndex = firstFresh + Math.floor(index / FRESH_EVERY);
    const localAddress = fresh ? address(8, freshIndex) : `127.0.0.${2 + (index % LEGIT_ADDRESS_COUNT)}`;
    const from = fresh ? `new${freshIndex}@fresh.example` : `user${index % LEGIT_ADDRESS_COUNT}@proven.example`;
    const plan = message('legit', index, 'legit@example.test', from);
    const limits = { replyTimeoutMs: LEGIT_DEADLINE_MS, deadlineMs: performance.now() + LEGIT_DEADLINE_MS };
    record({ ...(await runSession({ port, localAddress }, plan, limits, pool, signal)), fresh });
  });
}

/**
 * One message from each steady sender's address, all at once: what makes them proven to a
 * postscreen, whose cache then passes them without its pregreet test (a new client waits
 * postscreen_greet_wait, 6 s, the first time). Resolves with how many were accepted.
 */
export async function warmLegitSenders(port: number, pool: SocketPool, signal: AbortSignal): Promise<number> {
  const results = await Promise.all(Array.from({ length: LEGIT_ADDRESS_COUNT }, (_, index) => {
    const plan = message('warmup', index, 'legit@example.test', `user${index}@proven.example`);
    const limits = { replyTimeoutMs: LEGIT_DEADLINE_MS, deadlineMs: performance.now() + LEGIT_DEADLINE_MS };
    return runSession({ port, localAddress: `127.0.0.${2 + index}` }, plan, limits, pool, signal);
  }));
  return results.filter((result) => result.outcome === 'accepted').length;
}

/** A held connection's end: HOLD_MS after it opened, or when the phase's legitimate load has ended. */
function heldUntil(context: ScenarioContext): AbortSignal {
  const signal = AbortSignal.any([context.holdSignal, AbortSignal.timeout(HOLD_MS)]);
  setMaxListeners(0, signal);
  return signal;
}

/** "legit-17@bench.test" style Message-IDs let the maildir tell steady senders from the flash crowd. */
export function messageKind(messageId: string): string | undefined {
  return /^([a-z]+)-\d+@bench\.test$/.exec(messageId)?.[1];
}

function spamSession(context: ScenarioContext, localAddress: string, kind: string, index: number, talkEarly: boolean): Promise<SessionResult> {
  const plan = { ...message(kind, index, 'attack@example.test', `offer${index}@spam.example`), talkEarly };
  const limits = { replyTimeoutMs: ATTACK_REPLY_TIMEOUT_MS, deadlineMs: Number.POSITIVE_INFINITY };
  return runSession({ port: context.port, localAddress }, plan, limits, context.pool, context.attackSignal);
}

/**
 * A message of about 1.5 KB, legitimate and attack alike: the headers a real mailer writes (MIME,
 * list and tracking headers) and a short text body. Real mail, spam included, is rarely smaller;
 * SFDS's mean packet size tells data-carrying sessions by exactly this.
 */
function message(kind: string, index: number, to: string, from: string): MessagePlan {
  const domain = from.split('@')[1] as string;
  return {
    heloName: `mta.${domain}`,
    from,
    to,
    lines: [
      `From: "${kind} sender ${index}" <${from}>`,
      `To: <${to}>`,
      `Subject: ${kind} message ${index} of the flood benchmark`,
      `Message-ID: <${kind}-${index}@bench.test>`,
      `Date: ${new Date().toUTCString()}`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Transfer-Encoding: 8bit',
      `List-Unsubscribe: <mailto:unsubscribe-${index}@${domain}?subject=unsubscribe>, <https://${domain}/u/${index}>`,
      `X-Mailer: bench-mailer 1.0 (${kind})`,
      `X-Campaign-Id: ${kind}-${index}-${'0123456789abcdef'.repeat(2)}`,
      '',
      `This is ${kind} message ${index} of the flood benchmark.`,
      ...Array.from({ length: 14 }, (_, line) => `Line ${line + 1}: the quick brown fox jumps over the lazy dog, and then some more words.`),
    ],
  };
}

/** 127.<second>.x.y, the index-th address with y in 1..254 (no .0 or .255 hosts). */
function address(second: number, index: number): string {
  return `127.${second}.${Math.floor(index / 254)}.${(index % 254) + 1}`;
}

/**
 * Starts `run(index)` at `perSecond` for up to `total` indices, never more than `concurrency` at
 * once, until `signal` aborts; resolves when every started run has finished.
 */
async function launchAtRate(perSecond: number, total: number, concurrency: number, signal: AbortSignal, run: (index: number) => Promise<void>): Promise<void> {
  const started = performance.now();
  const running = new Set<Promise<void>>();
  let slotFreed: (() => void) | undefined;
  const stopped = new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  for (let index = 0; index < total && !signal.aborted; index += 1) {
    const due = started + (index * 1000) / perSecond;
    if (due > performance.now()) await Promise.race([pause(due - performance.now()), stopped]);
    while (running.size >= concurrency && !signal.aborted) {
      await Promise.race([new Promise<void>((resolve) => { slotFreed = resolve; }), stopped]);
    }
    if (signal.aborted) break;
    const task: Promise<void> = run(index).finally(() => {
      running.delete(task);
      slotFreed?.();
    });
    running.add(task);
  }
  await Promise.all(running);
}

function positiveEnv(name: string, fallback: number): number {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number`);
  return value;
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
