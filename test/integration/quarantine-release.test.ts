// The release scheduler against a scripted upstream and a real spool directory, on an injected clock: the gate
// (off-peak windows across midnight and in a time zone, server status, Postfix latency), forced release under
// the rate limit, oldest first, what each kind of reply does to the entry, expiry, source re-checks, crash
// recovery, and a released message arriving byte-exact with XCLIENT naming the original client.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/config/load.js';
import type { Policy } from '../../src/config/schema.js';
import { deliverEntry, upstreamOptionsFromPolicy } from '../../src/quarantine/release-delivery.js';
import { ReleaseScheduler } from '../../src/quarantine/release-scheduler.js';
import { QuarantineSpool } from '../../src/quarantine/spool.js';
import type { EntryMeta, NewEntry } from '../../src/quarantine/spool-entry.js';
import { FakeUpstream, type FakeUpstreamOptions } from '../support/fake-upstream.js';

const HOUR_MS = 3_600_000;
/** Wednesday 15 January 2025, 23:30 in Berlin (CET, UTC+1): inside the nightly 22:00-06:00 window. */
const WED_2330_BERLIN = Date.UTC(2025, 0, 15, 22, 30);
/** Wednesday noon in Berlin: peak hours. */
const WED_1200_BERLIN = Date.UTC(2025, 0, 15, 11, 0);
const BODY = Buffer.concat([
  Buffer.from('From: sender@remote.test\r\nTo: victim@example.test\r\nSubject: held\r\n\r\n.\r\n..two dots\r\n.leading\r\n'),
  Buffer.from([0xc3, 0xa4, 0x80, 0xff, 0x0d, 0x0a]),
  Buffer.from('end\r\n'),
]);

let dir: string;
let upstreams: FakeUpstream[];
let spools: QuarantineSpool[];
let schedulers: ReleaseScheduler[];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pushback-release-'));
  upstreams = [];
  spools = [];
  schedulers = [];
});

afterEach(async () => {
  await Promise.all(schedulers.map((scheduler) => scheduler.stop()));
  await Promise.all(spools.map((spool) => spool.close()));
  await Promise.all(upstreams.map((upstream) => upstream.close()));
  await rm(dir, { recursive: true, force: true });
});

function buildPolicy(upstreamAddress: string, release: Record<string, unknown> = {}, upstream: Record<string, unknown> = {}): Policy {
  const yaml = JSON.stringify({
    server: { hostname: 'proxy.test' },
    upstream: {
      address: upstreamAddress, xclient: 'required', connectTimeoutMs: 2_000, replyTimeoutMs: 2_000,
      dataStallTimeoutMs: 2_000, dataDoneTimeoutMs: 2_000, ...upstream,
    },
    quarantine: {
      release: {
        timeZone: 'Europe/Berlin', windows: [{ days: ['*'], from: '22:00', to: '06:00' }], messagesPerSecond: 1_000,
        concurrency: 2, backoffBaseSeconds: 300, backoffMaxSeconds: 4_000, maxAgeHours: 120, ...release,
      },
    },
  });
  const parsed = parsePolicyText(yaml, 'test', {});
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  return parsed.policy;
}

interface HarnessOptions {
  nowMs: number;
  release?: Record<string, unknown>;
  upstreamPolicy?: Record<string, unknown>;
  upstream?: FakeUpstreamOptions;
  status?: 1 | 0 | -1;
  latencyMs?: number | null;
  stillSuspect?: (address: string) => Promise<string | undefined>;
}

async function harness(options: HarnessOptions) {
  const clock = { nowMs: options.nowMs };
  const upstream = await FakeUpstream.start(options.upstream ?? {});
  upstreams.push(upstream);
  let random = 1;
  const spool = await QuarantineSpool.open(join(dir, 'spool'), { maxBytes: 1e9, maxMessages: 1_000 }, {
    hostname: 'proxy.test', nowMs: () => clock.nowMs, randomHex: () => (random++).toString(16).padStart(10, '0'),
  });
  spools.push(spool);
  const policy = buildPolicy(upstream.address, options.release, options.upstreamPolicy);
  const metrics = { released: 0, retried: 0, rejected: 0, expired: 0 };
  const logs: Array<{ level: string; message: string; fields: object }> = [];
  const log = (level: string) => (fields: object, message: string): void => void logs.push({ level, message, fields });
  /** Clock reading at each delivery start, and deliveries already in flight then. */
  const launches: Array<{ atMs: number; inFlight: number }> = [];
  const state = { status: options.status ?? 1, latencyMs: options.latencyMs ?? null };
  const scheduler: ReleaseScheduler = new ReleaseScheduler({
    spool,
    policy: () => policy,
    status: () => state.status,
    upstreamLatencyMs: () => state.latencyMs,
    stillSuspect: options.stillSuspect ?? (async () => undefined),
    logger: { info: log('info'), warn: log('warn'), error: log('error') },
    metrics: {
      released: () => void (metrics.released += 1),
      retried: () => void (metrics.retried += 1),
      rejected: () => void (metrics.rejected += 1),
      expired: () => void (metrics.expired += 1),
    },
    now: () => clock.nowMs,
    sleep: async (milliseconds) => {
      clock.nowMs += milliseconds;
    },
    upstreamOptions: () => {
      launches.push({ atMs: clock.nowMs, inFlight: scheduler.state().inFlight });
      return upstreamOptionsFromPolicy(policy);
    },
  });
  schedulers.push(scheduler);
  const add = (overrides: Partial<NewEntry> = {}, body: Buffer = BODY): Promise<EntryMeta> => spool.write({
    client: { address: '198.51.100.9', port: 41_234, helo: 'nine.remote.test' },
    mailFrom: { address: 'sender@remote.test', params: { BODY: '8BITMIME', SIZE: String(body.length) } },
    recipients: ['victim@example.test'],
    verdict: { reasons: ['sfds:flood'], score: 20 },
    receivedAtMs: clock.nowMs - HOUR_MS,
    ...overrides,
  }, Readable.from([body]));
  return { clock, upstream, spool, policy, scheduler, metrics, logs, launches, state, add };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('release gate', () => {
  it('holds outside the off-peak window and releases inside it, in the policy’s time zone', async () => {
    const h = await harness({ nowMs: WED_1200_BERLIN });
    const entry = await h.add();
    const closed = await h.scheduler.tick();
    expect(closed.gate).toEqual({ allowed: false, reason: 'peak-hours' });
    expect(h.upstream.connectionsOpened).toBe(0);
    expect(h.spool.get(entry.id)?.state).toBe('held');
    expect(h.scheduler.state().gate.allowed).toBe(false);

    h.clock.nowMs = WED_2330_BERLIN;
    const open = await h.scheduler.tick();
    expect(open.gate).toEqual({ allowed: true, reason: 'off-peak' });
    expect(open.outcomes).toEqual({ released: 1 });
    expect(h.upstream.messages).toHaveLength(1);
    expect(h.scheduler.state().lastTick).toEqual(open);
  });

  it('reads the window in its time zone: 23:30 in Berlin is 17:30 in New York', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN, release: { timeZone: 'America/New_York' } });
    await h.add();
    expect((await h.scheduler.tick()).gate).toEqual({ allowed: false, reason: 'peak-hours' });
    expect(h.upstream.connectionsOpened).toBe(0);
  });

  it('gives a window that crosses midnight to the day it starts on', async () => {
    const h = await harness({ nowMs: Date.UTC(2025, 0, 16, 0, 30), release: { windows: [{ days: ['wed'], from: '22:00', to: '06:00' }] } });
    await h.add();
    // Thursday 01:30 in Berlin: still Wednesday night's window.
    expect((await h.scheduler.tick()).outcomes).toEqual({ released: 1 });
    // Thursday 23:30: Thursday has no window.
    h.clock.nowMs = Date.UTC(2025, 0, 16, 22, 30);
    await h.add();
    expect((await h.scheduler.tick()).gate).toEqual({ allowed: false, reason: 'peak-hours' });
    expect(h.upstream.messages).toHaveLength(1);
  });

  it('holds while the server status is not safe, and while Postfix is slow', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN, status: 0 });
    const entry = await h.add();
    expect((await h.scheduler.tick()).gate).toEqual({ allowed: false, reason: 'server-not-safe' });
    h.state.status = -1;
    expect((await h.scheduler.tick()).gate).toEqual({ allowed: false, reason: 'server-not-safe' });
    h.state.status = 1;
    h.state.latencyMs = 1_500; // over maxUpstreamLatencyMs (1000)
    expect((await h.scheduler.tick()).gate).toEqual({ allowed: false, reason: 'upstream-slow' });
    expect(h.upstream.connectionsOpened).toBe(0);
    expect(h.spool.get(entry.id)).toMatchObject({ state: 'held', attempts: 0 });
    h.state.latencyMs = 200;
    expect((await h.scheduler.tick()).outcomes).toEqual({ released: 1 });
  });
});

describe('operator release', () => {
  it('force ignores the window and the status, but the rate limit holds (2 per second)', async () => {
    const h = await harness({ nowMs: WED_1200_BERLIN, status: -1, release: { messagesPerSecond: 2, concurrency: 5 } });
    const entries = [];
    for (let index = 0; index < 6; index += 1) entries.push(await h.add({ receivedAtMs: WED_1200_BERLIN - (10 - index) * HOUR_MS }));
    const ids = entries.map((entry) => entry.id);

    const results = await h.scheduler.release([...ids, '20250101T000000000Z-ffffffffff'], { force: true });
    expect(results.map((result) => result.outcome)).toEqual([...ids.map(() => 'released'), 'not-found']);
    expect(h.upstream.messages).toHaveLength(6);
    expect(h.launches).toHaveLength(6);
    for (let index = 2; index < h.launches.length; index += 1) {
      // No more than two deliveries start within any second.
      expect(h.launches[index]!.atMs - h.launches[index - 2]!.atMs).toBeGreaterThanOrEqual(1_000);
    }
    expect(h.clock.nowMs - WED_1200_BERLIN).toBe(2_500);
    expect(h.spool.list()).toEqual([]);
  });

  it('keeps a 5xx-rejected entry without bouncing by default, and with bounceRejected sends one DSN from <>', async () => {
    const refusal = { recipientReplies: { 'victim@example.test': '550 5.1.1 <victim@example.test>: User unknown' } };
    const quiet = await harness({ nowMs: WED_1200_BERLIN, upstream: refusal });
    const kept = await quiet.add();
    expect(await quiet.scheduler.release([kept.id], { force: true })).toMatchObject([{ outcome: 'rejected' }]);
    expect(quiet.spool.get(kept.id)?.state).toBe('rejected');
    expect(quiet.upstream.messages).toHaveLength(0); // no backscatter
    await quiet.spool.close();

    const bouncing = await harness({ nowMs: WED_1200_BERLIN, upstream: refusal, release: { bounceRejected: true } });
    const entry = await bouncing.add();
    expect(await bouncing.scheduler.release([entry.id], { force: true })).toMatchObject([{ outcome: 'rejected' }]);
    expect(bouncing.upstream.messages).toHaveLength(1);
    const notice = bouncing.upstream.messages[0]!;
    expect(notice.mailFrom).toBe('');
    expect(notice.rcptTo).toEqual(['sender@remote.test']);
    const text = notice.body.toString('latin1');
    expect(text).toMatch(/multipart\/report; .*report-type=delivery-status/i);
    expect(text).toMatch(/Final-Recipient: rfc822; ?victim@example\.test/i);
    expect(text).toMatch(/Status: 5\.1\.1/);
  });

  it('releases rejected entries again on request and reports unknown ids', async () => {
    const h = await harness({ nowMs: WED_1200_BERLIN, upstream: { recipientReplies: { 'victim@example.test': '550 5.1.1 User unknown' } } });
    const entry = await h.add();
    expect(await h.scheduler.release([entry.id], { force: true })).toMatchObject([{ id: entry.id, outcome: 'rejected' }]);
    h.upstream.options.recipientReplies = {};
    expect(await h.scheduler.release([entry.id, 'nonsense'], { force: true })).toEqual([
      { id: entry.id, outcome: 'released' }, { id: 'nonsense', outcome: 'not-found' },
    ]);
  });

  it('without force, makes entries due now for the next tick the gate allows', async () => {
    const h = await harness({ nowMs: WED_1200_BERLIN, upstream: { recipientReplies: { 'victim@example.test': '550 5.1.1 User unknown' } } });
    const later = await h.add({ nextAttemptAtMs: WED_1200_BERLIN + 6 * HOUR_MS });
    const rejected = await h.add();
    await h.scheduler.release([rejected.id], { force: true });
    const old = await h.add({ receivedAtMs: WED_1200_BERLIN - 200 * HOUR_MS });
    expect(await h.scheduler.release([later.id, rejected.id, old.id], { force: false })).toEqual([
      { id: later.id, outcome: 'scheduled', detail: 'waiting: peak-hours' },
      { id: rejected.id, outcome: 'scheduled', detail: 'waiting: peak-hours' },
      { id: old.id, outcome: 'not-releasable', detail: 'older than quarantine.release.maxAgeHours: release it with force' },
    ]);
    expect(h.spool.get(later.id)).toMatchObject({ state: 'held', nextAttemptAtMs: WED_1200_BERLIN });
    expect(h.spool.get(rejected.id)).toMatchObject({ state: 'held', nextAttemptAtMs: rejected.nextAttemptAtMs });
    expect(h.upstream.connectionsOpened).toBe(1);
    h.upstream.options.recipientReplies = {};
    h.clock.nowMs = WED_2330_BERLIN;
    expect((await h.scheduler.tick()).outcomes).toEqual({ released: 2 });
  });
});

describe('release batches', () => {
  it('goes oldest first among the entries due now', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN, release: { concurrency: 1 } });
    await h.add({ mailFrom: { address: 'b@remote.test', params: {} }, receivedAtMs: WED_2330_BERLIN - 1 * HOUR_MS });
    await h.add({ mailFrom: { address: 'a@remote.test', params: {} }, receivedAtMs: WED_2330_BERLIN - 3 * HOUR_MS });
    await h.add({ mailFrom: { address: 'c@remote.test', params: {} }, receivedAtMs: WED_2330_BERLIN - 2 * HOUR_MS });
    await h.add({ mailFrom: { address: 'later@remote.test', params: {} }, receivedAtMs: WED_2330_BERLIN - 4 * HOUR_MS, nextAttemptAtMs: WED_2330_BERLIN + HOUR_MS });
    expect((await h.scheduler.tick()).outcomes).toEqual({ released: 3 });
    expect(h.upstream.messages.map((message) => message.mailFrom)).toEqual(['a@remote.test', 'c@remote.test', 'b@remote.test']);
    expect(h.spool.list().map((entry) => entry.mailFrom.address)).toEqual(['later@remote.test']);
  });

  it('never has more than `concurrency` deliveries in flight', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN, release: { concurrency: 2 }, upstream: { slowDataMs: 20 } });
    for (let index = 0; index < 5; index += 1) await h.add();
    expect((await h.scheduler.tick()).outcomes).toEqual({ released: 5 });
    expect(h.launches.map((launch) => launch.inFlight)).toEqual([0, 1, 1, 1, 1]);
  });

  it('carries the DSN parameters the client sent, xtext intact, on MAIL and on each RCPT', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN });
    await h.add({
      mailFrom: { address: 'sender@remote.test', params: { RET: 'HDRS', ENVID: 'abc+2Bdef' } },
      recipients: ['victim@example.test', 'other@example.test'],
      recipientParams: { 'victim@example.test': ' NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;victim+2Btag@example.test' },
    });
    expect((await h.scheduler.tick()).outcomes).toEqual({ released: 1 });
    expect(h.upstream.commands).toContainEqual(expect.stringMatching(/^MAIL FROM:<sender@remote\.test> SIZE=\d+ RET=HDRS ENVID=abc\+2Bdef$/));
    expect(h.upstream.commands).toContain('RCPT TO:<victim@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;victim+2Btag@example.test');
    expect(h.upstream.commands).toContain('RCPT TO:<other@example.test>');
  });

  it('delivers released mail byte-exact with XCLIENT naming the original client, then removes it', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN });
    const entry = await h.add();
    const stored = await readAll(await h.spool.readMessage(entry.id));
    expect((await h.scheduler.tick()).outcomes).toEqual({ released: 1 });
    const [message] = h.upstream.messages;
    expect(message?.body.equals(stored)).toBe(true);
    expect(message?.body.subarray(message.body.length - BODY.length).equals(BODY)).toBe(true);
    expect(message?.xclient).toBe('ADDR=198.51.100.9 PORT=41234 NAME=[UNAVAILABLE] HELO=nine.remote.test');
    expect(message?.helo).toBe('nine.remote.test');
    expect(message).toMatchObject({ mailFrom: 'sender@remote.test', rcptTo: ['victim@example.test'] });
    expect(h.upstream.commands).toContain(`MAIL FROM:<sender@remote.test> SIZE=${entry.sizeBytes} BODY=8BITMIME`);
    expect(h.spool.get(entry.id)).toBeUndefined();
    expect(h.metrics).toEqual({ released: 1, retried: 0, rejected: 0, expired: 0 });
    expect(h.logs.find((line) => line.message === 'quarantined message released')?.fields)
      .toMatchObject({ id: entry.id, client: '198.51.100.9', xclientSent: true, queueId: 'FAKE1' });
  });

  it('retries after a 4xx with backoff: attempts 1, nextAttemptAt moved, then doubled', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN, upstream: { dotReply: '451 4.3.0 Try again later' } });
    const entry = await h.add();
    expect((await h.scheduler.tick()).outcomes).toEqual({ retry: 1 });
    expect(h.spool.get(entry.id)).toMatchObject({ state: 'held', attempts: 1, nextAttemptAtMs: WED_2330_BERLIN + 300_000 });
    expect(h.spool.get(entry.id)?.lastError).toMatch(/451 4\.3\.0 Try again later/);
    expect(h.metrics.retried).toBe(1);
    // Not due yet: nothing goes.
    expect((await h.scheduler.tick()).outcomes).toEqual({});
    h.clock.nowMs += 300_000;
    await h.scheduler.tick();
    expect(h.spool.get(entry.id)).toMatchObject({ attempts: 2, nextAttemptAtMs: h.clock.nowMs + 600_000 });
    expect(h.upstream.connectionsOpened).toBe(2);
  });

  it('treats a connection failure as a retry', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN, upstream: { dropAt: 'ehlo' } });
    const entry = await h.add();
    expect((await h.scheduler.tick()).outcomes).toEqual({ retry: 1 });
    expect(h.spool.get(entry.id)).toMatchObject({ state: 'held', attempts: 1, nextAttemptAtMs: WED_2330_BERLIN + 300_000 });
    expect(h.spool.get(entry.id)?.lastError).toMatch(/no reply/);
  });

  it('keeps an entry Postfix refuses with 5xx as rejected, and bounces only when asked and never to <>', async () => {
    const h = await harness({
      nowMs: WED_2330_BERLIN, release: { bounceRejected: true },
      upstream: { recipientReplies: { 'victim@example.test': '550 5.1.1 <victim@example.test>: Recipient address rejected: User unknown' } },
    });
    const entry = await h.add();
    const nullSender = await h.add({ mailFrom: { address: '', params: {} } });
    expect((await h.scheduler.tick()).outcomes).toEqual({ rejected: 2 });
    expect(h.spool.get(entry.id)).toMatchObject({ state: 'rejected', attempts: 1 });
    expect(h.spool.get(entry.id)?.lastError).toMatch(/^victim@example\.test: 550 5\.1\.1/);
    expect(h.spool.get(nullSender.id)?.state).toBe('rejected');
    expect(h.metrics.rejected).toBe(2);
    expect(h.upstream.messages).toHaveLength(1);
    const [notice] = h.upstream.messages;
    expect(notice).toMatchObject({ mailFrom: '', rcptTo: ['sender@remote.test'] });
    const text = notice!.body.toString('latin1');
    expect(text).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status;/m);
    expect(text).toContain('Final-Recipient: rfc822; victim@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n');
    expect(text).toContain('Content-Type: text/rfc822-headers\r\n\r\nReceived: from nine.remote.test');
    expect(text).toContain('Subject: held\r\n');
    expect(text).not.toContain('..two dots');
  });

  it('sends the notice to the upstream from <> as the proxy, quoting header fields only: no body text, at most 8 KB', async () => {
    const h = await harness({
      nowMs: WED_2330_BERLIN, release: { bounceRejected: true },
      upstream: { recipientReplies: { 'victim@example.test': '550 5.1.1 <victim@example.test>: Recipient address rejected: User unknown' } },
    });
    // Text straight after the fields, without the empty line: Postfix reads it as the body, and so must the notice.
    await h.add({}, Buffer.from('From: sender@remote.test\r\nSubject: held\r\nBUY CHEAP WATCHES AT shop.example\r\nmore text\r\n'));
    // 12 KB of the client's own header fields.
    const padding = Array.from({ length: 40 }, (_, index) => `X-Padding-${index}: ${'p'.repeat(300)}\r\n`).join('');
    await h.add({}, Buffer.from(`From: sender@remote.test\r\nSubject: padded\r\n${padding}\r\nbody of the padded one\r\n`));
    expect((await h.scheduler.tick()).outcomes).toEqual({ rejected: 2 });
    expect(h.upstream.messages).toHaveLength(2);
    const quoted: string[] = [];
    for (const notice of h.upstream.messages) {
      // Through the upstream, from the null sender, as the proxy itself: no XCLIENT naming the suspect client.
      expect(notice).toMatchObject({ mailFrom: '', rcptTo: ['sender@remote.test'], xclient: undefined, helo: 'proxy.test' });
      const text = notice.body.toString('latin1');
      const boundary = /boundary="([^"]+)"/.exec(text)?.[1];
      expect(boundary).toMatch(/^=_notice_[0-9a-f]{24}$/);
      const parts = text.split(`--${boundary}`);
      expect(parts).toHaveLength(5);
      expect(parts[2]).toMatch(/^\r\nContent-Type: message\/delivery-status\r\n/);
      expect(parts[3]).toMatch(/^\r\nContent-Type: text\/rfc822-headers\r\n\r\nReceived: from nine\.remote\.test/);
      expect(parts[4]).toBe('--\r\n');
      quoted.push(parts[3]!.replace(/^\r\nContent-Type: text\/rfc822-headers\r\n\r\n/, '').replace(/\r\n\r\n$/, ''));
    }
    const [plain, padded] = quoted.sort((left, right) => left.length - right.length);
    expect(plain).toMatch(/\r\nSubject: held$/);
    expect(h.upstream.messages.some((notice) => /BUY CHEAP|more text|body of the padded/.test(notice.body.toString('latin1')))).toBe(false);
    expect(padded).toContain('Subject: padded\r\nX-Padding-0: ppp');
    expect(Buffer.byteLength(padded!)).toBeLessThanOrEqual(8_192);
    // Whole fields only: the last one quoted is complete.
    expect(padded).toMatch(/\r\nX-Padding-\d+: p{300}$/);
  });

  it('removes a partly refused entry once one recipient got it', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN, upstream: { recipientReplies: { 'ghost@example.test': '550 5.1.1 User unknown' } } });
    const entry = await h.add({ recipients: ['ghost@example.test', 'victim@example.test'] });
    expect((await h.scheduler.tick()).outcomes).toEqual({ released: 1 });
    expect(h.upstream.messages[0]?.rcptTo).toEqual(['victim@example.test']);
    expect(h.spool.get(entry.id)).toBeUndefined();
  });

  it('expires entries older than maxAgeHours, even outside the window', async () => {
    const h = await harness({ nowMs: WED_1200_BERLIN, release: { maxAgeHours: 120 } });
    const old = await h.add({ receivedAtMs: WED_1200_BERLIN - 121 * HOUR_MS });
    const young = await h.add({ receivedAtMs: WED_1200_BERLIN - 119 * HOUR_MS });
    const summary = await h.scheduler.tick();
    expect(summary).toMatchObject({ expiredByAge: 1, gate: { allowed: false } });
    expect(h.spool.get(old.id)).toMatchObject({ state: 'rejected', lastError: 'expired: not released within 120 h' });
    expect(h.spool.get(young.id)?.state).toBe('held');
    expect(h.metrics.expired).toBe(1);
  });
});

describe('source re-check', () => {
  it('holds an entry whose source is still suspect, pushing its next attempt by the backoff base', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN, stillSuspect: async (address) => (address === '198.51.100.9' ? 'deny-listed' : undefined) });
    const suspect = await h.add();
    const clean = await h.add({ client: { address: '192.0.2.1', port: 2_525, helo: 'clean.test' } });
    expect((await h.scheduler.tick()).outcomes).toEqual({ held: 1, released: 1 });
    expect(h.spool.get(suspect.id)).toMatchObject({ state: 'held', attempts: 0, nextAttemptAtMs: WED_2330_BERLIN + 300_000, lastError: 'held: source still suspect (deny-listed)' });
    expect(h.spool.get(clean.id)).toBeUndefined();
    expect(h.upstream.messages.map((message) => message.xclient)).toEqual([expect.stringContaining('ADDR=192.0.2.1 ')]);
  });

  it('expires it instead when the policy says so, and leaves it alone when the check fails', async () => {
    let answer: () => Promise<string | undefined> = async () => 'verdict: quarantine';
    const h = await harness({ nowMs: WED_2330_BERLIN, release: { whenStillSuspect: 'expire' }, stillSuspect: () => answer() });
    const first = await h.add();
    expect((await h.scheduler.tick()).outcomes).toEqual({ expired: 1 });
    expect(h.spool.get(first.id)).toMatchObject({ state: 'rejected', lastError: 'expired: source still suspect (verdict: quarantine)' });
    expect(h.metrics.expired).toBe(1);

    answer = async () => {
      throw new Error('redis down');
    };
    const second = await h.add();
    expect((await h.scheduler.tick()).outcomes).toEqual({ 'check-failed': 1 });
    expect(h.spool.get(second.id)).toMatchObject({ state: 'held', attempts: 0 });
    expect(h.upstream.connectionsOpened).toBe(0);
  });
});

describe('lifecycle', () => {
  it('puts an entry a crash left releasing back on hold at start', async () => {
    const h = await harness({ nowMs: WED_1200_BERLIN });
    const entry = await h.add();
    await h.spool.update(entry.id, { state: 'releasing' });
    await h.spool.close();
    spools.splice(spools.indexOf(h.spool), 1);
    const reopened = await QuarantineSpool.open(join(dir, 'spool'), { maxBytes: 1e9, maxMessages: 1_000 });
    spools.push(reopened);
    expect(reopened.openReport.interruptedReleases).toEqual([entry.id]);
    const scheduler = new ReleaseScheduler({
      spool: reopened, policy: () => h.policy, status: () => 1, upstreamLatencyMs: () => null, stillSuspect: async () => undefined,
      logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
      metrics: { released: () => undefined, retried: () => undefined, rejected: () => undefined, expired: () => undefined },
      now: () => WED_1200_BERLIN,
    });
    schedulers.push(scheduler);
    await scheduler.start();
    expect(reopened.get(entry.id)).toMatchObject({ state: 'held', attempts: 0 });
    expect(scheduler.state().nextTickAtMs).toBe(WED_1200_BERLIN + 30_000);
  });

  it('stop() waits for a delivery in flight, which is then retried later', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN, upstream: { stallAt: 'dot' }, upstreamPolicy: { dataDoneTimeoutMs: 300 } });
    const entry = await h.add();
    const tick = h.scheduler.tick();
    while (!h.upstream.commands.includes('DATA')) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(h.scheduler.state().inFlight).toBe(1);
    expect(h.spool.get(entry.id)?.state).toBe('releasing');
    await h.scheduler.stop();
    expect(h.scheduler.state().inFlight).toBe(0);
    expect((await tick).outcomes).toEqual({ retry: 1 });
    expect(h.spool.get(entry.id)).toMatchObject({ state: 'held', attempts: 1 });
  });

  it('an aborted delivery drops the connection before Postfix answers the final dot: no reply, a retry', async () => {
    const h = await harness({ nowMs: WED_2330_BERLIN, upstream: { stallAt: 'dot' }, upstreamPolicy: { dataDoneTimeoutMs: 30_000 } });
    const entry = await h.add();
    const abort = new AbortController();
    const delivery = deliverEntry(entry, await h.spool.readMessage(entry.id), upstreamOptionsFromPolicy(h.policy), abort.signal);
    while (!h.upstream.commands.includes('DATA')) await new Promise((resolve) => setTimeout(resolve, 10));
    abort.abort();
    const report = await delivery;
    expect(report.replies).toEqual([{ recipient: 'victim@example.test', code: null, text: expect.stringMatching(/^no reply: /) }]);
    await h.upstream.waitForIdle();
    expect(h.upstream.messages).toHaveLength(0);
  });
});
