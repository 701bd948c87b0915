// Issue 11's acceptance for one session's memory: a client pipelines 100,000 RCPTs in one write at a
// session whose Postfix keeps refusing (550 to each), or has hung up (every RCPT then answered by the
// proxy itself, at no cost to the client). The proxy answers each in order, closes with Postfix's
// `421 4.7.0 … Error: too many errors` after 20 error replies, logs one session line under 16 KB and
// keeps under 5 MB of heap for it, while another client's mail goes through and the process stays up.
// The measured heap growth and log line size are printed, to be quoted.
import { Writable } from 'node:stream';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { FakeUpstream, type FakeUpstreamOptions } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { completeSession } from '../support/sessions.js';
import { SmtpDialog, type Reply } from '../support/smtp-dialog.js';

const RCPTS = 100_000;
const FLOODER = '127.0.0.61';
const HEAP_GROWTH_LIMIT_BYTES = 5 * 1024 * 1024;
const LOG_LINE_LIMIT_BYTES = 16 * 1024;

let upstream: FakeUpstream | undefined;
let proxy: TestProxy | undefined;

afterEach(async () => {
  await proxy?.stop();
  await upstream?.close();
  proxy = undefined;
  upstream = undefined;
});

/** A full garbage collection: --expose-gc's gc when the run has it, else V8's flag turned on now. */
function collector(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return exposed;
  try {
    v8.setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
}

function heapUsedBytes(gc: (() => void) | undefined): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
}

/** Every reply the flooding client hears until the proxy closes, bounded in time. */
async function repliesUntilClosed(dialog: SmtpDialog, timeoutMs: number): Promise<Reply[]> {
  const replies: Reply[] = [];
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      replies.push(await dialog.reply(Math.max(1, deadline - Date.now())));
    } catch {
      break;
    }
  }
  return replies;
}

async function floodSession(name: string, upstreamOptions: FakeUpstreamOptions, refusal: RegExp): Promise<void> {
  // Other clients' mail (to b@example.test) is accepted.
  upstream = await FakeUpstream.start({ ...upstreamOptions, recipientReplies: { 'b@example.test': '250 2.1.5 Ok' } });
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  proxy = await startTestProxy(upstream.address, '', {}, createLogger('info', sink));
  const gc = collector();
  // Built before the baseline: the client's bytes are not the proxy's memory.
  const payload = Buffer.from(Array.from({ length: RCPTS }, (_, index) => `RCPT TO:<n${index}@example.test>\r\n`).join(''), 'latin1');

  const flood = await SmtpDialog.connect(proxy.port, { localAddress: FLOODER });
  expect((await flood.reply()).code).toBe(220);
  expect((await flood.command('EHLO flood.test')).code).toBe(250);
  expect((await flood.command('MAIL FROM:<a@flood.test>')).code).toBe(250);
  const baselineBytes = heapUsedBytes(gc);

  flood.write(payload);
  // Another client's whole session while the flood's bytes are still arriving.
  const [replies, otherCode] = await Promise.all([repliesUntilClosed(flood, 20_000), completeSession(proxy.port, '127.0.0.62')]);
  expect(otherCode).toBe(250);
  expect(flood.closed).toBe(true);
  flood.destroy();

  // Each RCPT answered in order, then Postfix's hard error limit: 20 errors, and the 21st gets 421.
  expect(replies).toHaveLength(21);
  expect(replies.slice(0, 20).every((reply) => refusal.test(`${reply.code} ${reply.text}`))).toBe(true);
  expect(replies[20]).toEqual({ code: 421, text: `4.7.0 ${proxy.policy.server.hostname} Error: too many errors` });
  expect(upstream.commands.filter((line) => /^RCPT TO:<n\d+@/.test(line)).length).toBeLessThanOrEqual(20);

  const records = await proxy.waitForSessions(2);
  const record = records.find((candidate) => candidate.client === FLOODER);
  expect(record?.end).toBe('refused');
  expect(record?.commands).toBeLessThanOrEqual(23);
  const line = logLines.find((text) => text.includes('"msg":"session"') && text.includes(`"client":"${FLOODER}"`));
  expect(line).toBeDefined();
  const lineBytes = Buffer.byteLength(line!, 'utf8');
  const growthBytes = heapUsedBytes(gc) - baselineBytes;
  console.log(`${name}: ${RCPTS} pipelined RCPTs, ${replies.length} replies, session log line ${lineBytes} bytes, heap growth ${(growthBytes / 1024 / 1024).toFixed(2)} MB (${gc ? 'after a full GC' : 'no GC available'})`);
  expect(lineBytes).toBeLessThan(LOG_LINE_LIMIT_BYTES);
  // Without a GC to call, garbage counts too: the bound is then a generous one.
  expect(growthBytes).toBeLessThan(gc ? HEAP_GROWTH_LIMIT_BYTES : 4 * HEAP_GROWTH_LIMIT_BYTES);
  expect(payload.length).toBeGreaterThan(RCPTS);

  // The process is up and serves the next client.
  expect((await fetch(`http://127.0.0.1:${proxy.proxy.adminAddress.port}/healthz`)).status).toBe(200);
  expect(await completeSession(proxy.port, '127.0.0.63')).toBe(250);
}

describe('100,000 RCPTs in one session', () => {
  it('to a Postfix that refuses each: 20 refusals, 421, a small log line and little heap', async () => {
    await floodSession('refusing upstream', { otherRecipientsReply: '550 5.1.1 Recipient address rejected: User unknown' }, /^550 5\.1\.1 /);
  });

  it('after Postfix hung up: 20 of the proxy\'s own 451s, 421, a small log line and little heap', async () => {
    await floodSession('upstream hung up', { hangUpAfterRcpts: 3, otherRecipientsReply: '550 5.1.1 Recipient address rejected: User unknown' }, /^(550 5\.1\.1|451 4\.4\.1) /);
  });
});
