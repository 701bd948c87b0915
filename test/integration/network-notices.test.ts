// Notices to source networks through the real proxy: sources bound across 127.0.0.0/8 flood with complete
// sessions until a fast SFDS set flags them, and an in-process SMTP sink (smtp-server) plays the relay.
// One notice per contact lists the sources flagged together; a later flood in the same network within the
// period is suppressed (on this node, and on a second node sharing Redis); a source in no listed network
// gets no notice and a log line; a dry run writes the .eml file instead.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { SMTPServer } from 'smtp-server';
import { afterEach, describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { startProxy, type RunningProxy } from '../../src/main.js';
import type { SessionRecord } from '../../src/session/record.js';
import { FakeUpstream } from '../support/fake-upstream.js';
import { deleteKeys, TEST_REDIS_URL } from '../support/redis-keys.js';
import { waitFor, waitForAsync } from '../support/redis-server.js';
import { completeSession, inParallel } from '../support/sessions.js';

/** The relay: accepts every message and keeps its envelope and bytes. */
class SmtpSink {
  readonly messages: Array<{ from: string; to: string[]; raw: string }> = [];
  private constructor(private readonly server: SMTPServer, readonly port: number) {}

  static async start(): Promise<SmtpSink> {
    const messages: SmtpSink['messages'] = [];
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      onData(stream, session, callback) {
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => chunks.push(chunk));
        stream.on('end', () => {
          const from = session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address;
          messages.push({ from, to: session.envelope.rcptTo.map((rcpt) => rcpt.address), raw: Buffer.concat(chunks).toString('utf8') });
          callback();
        });
      },
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const sink = new SmtpSink(server, (server.server.address() as { port: number }).port);
    (sink as { messages: SmtpSink['messages'] }).messages = messages;
    return sink;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

interface Message {
  headers: Map<string, string>;
  text: string;
  attachments: Map<string, string>;
}

/** Just enough MIME for what nodemailer writes here: unfolded headers, a 7bit text part, base64 attachments. */
function parseMessage(raw: string): Message {
  const [head = '', ...rest] = raw.split(/\r\n\r\n/);
  const headers = parseHeaders(head);
  const boundary = /boundary="([^"]+)"/.exec(headers.get('content-type') ?? '')?.[1];
  if (boundary === undefined) throw new Error('expected a multipart message');
  const parts = rest.join('\r\n\r\n').split(`--${boundary}`).slice(1, -1);
  let text = '';
  const attachments = new Map<string, string>();
  for (const part of parts) {
    const [partHead = '', ...body] = part.replace(/^\r\n/, '').split(/\r\n\r\n/);
    const partHeaders = parseHeaders(partHead);
    const content = body.join('\r\n\r\n').replace(/\r\n$/, '');
    const filename = /filename=("?)([^";]+)\1/.exec(partHeaders.get('content-disposition') ?? '')?.[2];
    if (filename !== undefined) {
      expect(partHeaders.get('content-transfer-encoding')).toBe('base64');
      attachments.set(filename, Buffer.from(content, 'base64').toString('utf8'));
    } else {
      expect(partHeaders.get('content-type')).toBe('text/plain; charset=utf-8');
      // Lines of at most 76 characters, ASCII: sent as is, readable in any client.
      expect(partHeaders.get('content-transfer-encoding')).toBe('7bit');
      text = content.replace(/\r\n/g, '\n');
    }
  }
  return { headers, text, attachments };
}

function parseHeaders(block: string): Map<string, string> {
  const headers = new Map<string, string>();
  for (const line of block.replace(/\r\n[ \t]+/g, ' ').split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
  }
  return headers;
}

interface NoticeProxy {
  proxy: RunningProxy;
  port: number;
  sessions: SessionRecord[];
  logs: Array<Record<string, unknown>>;
}

const proxies: RunningProxy[] = [];
let upstream: FakeUpstream | undefined;
let sink: SmtpSink | undefined;
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  await Promise.all(proxies.splice(0).map((proxy) => proxy.stop()));
  await upstream?.close();
  await sink?.close();
  for (const cleanup of cleanups.splice(0)) await cleanup();
  upstream = undefined;
  sink = undefined;
});

const FAST_SFDS = 'pushback: { sfds: { sets: [{ name: fast, periodSeconds: 3600, minMeanPacketBytes: 60, minFlowsPerPeriod: 5, minDurationPeriods: 0 }] } }\n';

function noticesPolicy(notices: string): string {
  return [
    'server: { hostname: mx.example.org }',
    'entropy: { statusIntervalMs: 100 }',
    FAST_SFDS.trimEnd(),
    'notices:',
    '  enabled: true',
    '  from: pushback@mx.example.org',
    '  contacts:',
    '    - { cidr: 127.20.0.0/16, organisation: Example School, email: abuse@school.example, name: Jane Doe }',
    '    - { cidr: 127.20.9.0/24, organisation: Example Lab, email: lab@school.example }',
    notices,
  ].join('\n');
}

/** The real proxy in-process, its log lines captured as objects (pino JSON). */
async function startNoticeProxy(yaml: string, env: NodeJS.ProcessEnv = {}): Promise<NoticeProxy> {
  upstream ??= await FakeUpstream.start();
  const result = parsePolicyText(yaml, 'test-policy.yaml', {
    PUSHBACK_LISTEN: '127.0.0.1:0',
    PUSHBACK_ADMIN: '127.0.0.1:0',
    PUSHBACK_SPOOL_DIR: mkdtempSync(join(tmpdir(), 'pushback-spool-')),
    PUSHBACK_UPSTREAM: upstream.address,
    ...env,
  });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  const logs: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  const sessions: SessionRecord[] = [];
  const proxy = await startProxy(result.policy, createLogger('info', destination), { onSessionEnd: (record) => sessions.push(record) });
  proxies.push(proxy);
  return { proxy, port: proxy.smtpAddress.port, sessions, logs };
}

/** Complete sessions carrying 2 KB messages, one at a time: over the fast set's 5 flows from the sixth. */
async function flood(port: number, source: string, sessions = 8): Promise<void> {
  for (let index = 0; index < sessions; index += 1) expect(await completeSession(port, source, 'b@example.test', 2_000)).toBe(250);
}

async function metric(proxy: RunningProxy, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${proxy.adminAddress.port}/metrics`)).text();
  return text.split('\n').filter((line) => pattern.test(line)).reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

function logged(test: NoticeProxy, message: string): Array<Record<string, unknown>> {
  return test.logs.filter((line) => line.msg === message);
}

/** The value of a record row ("  Flows (sessions):  7") in the notice text for a source, its wrapped lines joined. */
function row(text: string, source: string, name: string): string {
  const block = text.slice(text.indexOf(`Source ${source},`));
  const match = new RegExp(`\\n  ${name.replace(/[()]/g, '\\$&')}: +([^\\n]*(?:\\n {21}[^\\n]*)*)`).exec(block);
  if (match?.[1] === undefined) throw new Error(`no row "${name}" for ${source}`);
  return match[1].replace(/\n +/g, ' ');
}

describe('notices to source networks', () => {
  it('sends one notice listing the sources of a network flagged together; a later flood there is suppressed', async () => {
    sink = await SmtpSink.start();
    const test = await startNoticeProxy(noticesPolicy(`  relay: { address: "127.0.0.1:${sink.port}", timeoutMs: 5000 }\n  batchDelayMs: 3000\n`));
    const startedMs = Date.now();
    // Two hosts of the school flood side by side: their verdicts come a session apart, inside one batch.
    await inParallel(2, 2, (index) => flood(test.port, `127.20.0.${index + 1}`));
    await waitFor(() => sink!.messages.length === 1, 10_000, () => 'the notice');
    const [received] = sink.messages;
    expect(received).toMatchObject({ from: 'pushback@mx.example.org', to: ['abuse@school.example'] });
    const notice = parseMessage(received!.raw);
    expect(notice.headers.get('subject')).toMatch(/^SMTP flooding from 127\.20\.0\.[12] and 1 more host \(SFDS set fast\), seen by mx\.example\.org$/);
    expect(notice.headers.get('to')).toBe('abuse@school.example');
    expect(notice.headers.get('from')).toBe('pushback@mx.example.org');
    expect(notice.headers.get('auto-submitted')).toBe('auto-generated');
    expect(notice.text).toMatch(/^Hello Jane Doe,\n/);
    expect(notice.text).toContain('Example School (127.20.0.0/16)');

    const csv = notice.attachments.get('flooding-records.csv')!.trimEnd().split('\r\n').map((line) => line.split(','));
    expect(csv[0]).toEqual(['source', 'set', 'first_start_utc', 'last_end_utc', 'flows', 'packets', 'bytes', 'mean_packet_bytes', 'duration_periods', 'period_seconds', 'flows_per_period', 'action']);
    expect(csv.slice(1).map((fields) => fields[0]).sort()).toEqual(['127.20.0.1', '127.20.0.2']);
    for (const source of ['127.20.0.1', '127.20.0.2']) {
      // The numbers are what SFDS had when the verdict came: the first `flows` sessions of the source,
      // as their own log records count them.
      const flows = Number(row(notice.text, source, 'Flows (sessions)'));
      expect(flows).toBeGreaterThanOrEqual(6);
      expect(flows).toBeLessThanOrEqual(8);
      const mine = test.sessions.filter((record) => record.client === source).slice(0, flows);
      const packets = mine.reduce((sum, record) => sum + record.packets, 0);
      const bytes = mine.reduce((sum, record) => sum + record.bytesIn + record.bytesOut, 0);
      expect(row(notice.text, source, 'Packets')).toBe(String(packets));
      expect(row(notice.text, source, 'Bytes')).toBe(String(bytes));
      expect(row(notice.text, source, 'Mean packet size')).toBe(`${(bytes / packets).toFixed(1)} bytes`);
      expect(row(notice.text, source, 'Duration')).toBe('1 period of 3600 s');
      expect(row(notice.text, source, 'Rate')).toBe(`${flows.toFixed(1)} flows per period (${flows.toFixed(1)} per hour)`);
      expect(row(notice.text, source, 'What we did')).toMatch(/^quarantined its mail \(accepted, held back for delivery off-peak\) until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(then judged afresh\)$/);
      const [from, to] = row(notice.text, source, 'Time range').split(' to ').map((time) => Date.parse(time));
      expect(from! >= Math.floor(startedMs / 1000) * 1000 && from! <= to! && to! <= Date.now()).toBe(true);
      const csvRow = csv.find((fields) => fields[0] === source)!;
      expect(csvRow.slice(4, 11)).toEqual([String(flows), String(packets), String(bytes), (bytes / packets).toFixed(1), '1', '3600', flows.toFixed(1)]);
    }
    // The sink has the mail a moment before the proxy hears its 250 and logs the send.
    await waitFor(() => logged(test, 'notice to a source network sent').length > 0, 5_000, () => 'the log line of the sent notice');
    expect(logged(test, 'notice to a source network sent')).toEqual([expect.objectContaining({ to: 'abuse@school.example', networks: ['127.20.0.0/16'] })]);
    expect(await metric(test.proxy, /^smtp_pushback_notices_total\{outcome="sent"\}/)).toBe(1);

    // A third host of the school floods within the period: logged as suppressed, no second mail. (The
    // /24 of the lab has a contact of its own, so its hosts are not the school's.)
    await flood(test.port, '127.20.0.3');
    await waitForAsync(async () => (await metric(test.proxy, /^smtp_pushback_notices_total\{outcome="suppressed"\}/)) === 1, 10_000, 'the suppressed notice');
    expect(logged(test, 'notice to a source network suppressed: this node sent the contact a notice this period'))
      .toEqual([expect.objectContaining({ sources: ['127.20.0.3'], to: 'abuse@school.example' })]);
    expect(sink.messages).toHaveLength(1);
  });

  it('sends nothing for a source in no listed network, and logs it', async () => {
    sink = await SmtpSink.start();
    const test = await startNoticeProxy(noticesPolicy(`  relay: { address: "127.0.0.1:${sink.port}" }\n  batchDelayMs: 0\n`));
    await flood(test.port, '127.21.0.1');
    await waitForAsync(async () => (await metric(test.proxy, /^smtp_pushback_notices_total\{outcome="no_contact"\}/)) === 1, 10_000, 'the no-contact count');
    expect(logged(test, 'no contact for the network of a flooding source: no notice')).toEqual([expect.objectContaining({ source: '127.21.0.1', verdict: 'quarantine' })]);
    // The verdict itself was stored and logged as usual; only the notice is missing.
    expect(await metric(test.proxy, /^smtp_pushback_verdicts_total\{action="quarantine",detector="sfds"\}/)).toBe(1);
    expect(await metric(test.proxy, /^smtp_pushback_notices_total\{outcome="sent"\}/)).toBe(0);
    expect(sink.messages).toEqual([]);
  });

  it('writes the notice as an .eml file in dry-run mode', async () => {
    const dryRunDir = join(mkdtempSync(join(tmpdir(), 'pushback-notices-')), 'outbox');
    const test = await startNoticeProxy(`mode: observe\n${noticesPolicy(`  dryRunDir: ${dryRunDir}\n  batchDelayMs: 0\n  cc: [abuse-desk@mx.example.org]\n`)}`);
    await flood(test.port, '127.20.9.7');
    await waitForAsync(async () => (await metric(test.proxy, /^smtp_pushback_notices_total\{outcome="sent"\}/)) === 1, 10_000, 'the dry-run notice');
    const files = readdirSync(dryRunDir);
    expect(files).toEqual([expect.stringMatching(/^\d{4}-\d\d-\d\dT[\d-]+Z-lab@school\.example-[0-9a-f]{6}\.eml$/)]);
    const file = join(dryRunDir, files[0]!);
    // The spool's modes, whatever the umask (a 022 one gave 0755 and 0644).
    expect(statSync(dryRunDir).mode & 0o777).toBe(0o750);
    expect(statSync(file).mode & 0o777).toBe(0o640);
    expect(logged(test, 'notice to a source network written (dry run)')).toEqual([expect.objectContaining({ file, to: 'lab@school.example', networks: ['127.20.9.0/24'] })]);
    const notice = parseMessage(readFileSync(file, 'utf8'));
    // The longest prefix holding the source is the lab's /24, not the school's /16.
    expect(notice.headers.get('to')).toBe('lab@school.example');
    expect(notice.headers.get('cc')).toBe('abuse-desk@mx.example.org');
    expect(notice.headers.get('from')).toBe('pushback@mx.example.org');
    expect(notice.headers.get('subject')).toBe('SMTP flooding from 127.20.9.7 (SFDS set fast), seen by mx.example.org');
    expect(notice.headers.get('auto-submitted')).toBe('auto-generated');
    expect(notice.headers.get('message-id')).toMatch(/^<.+@mx\.example\.org>$/);
    expect(Number.isNaN(Date.parse(notice.headers.get('date') ?? ''))).toBe(false);
    expect(notice.text).toMatch(/^Hello,\n/);
    expect(notice.text).toContain('Example Lab (127.20.9.0/24)');
    // Observe mode: the verdict was computed and logged, and the notice says nothing was enforced.
    expect(row(notice.text, '127.20.9.7', 'What we did')).toBe('nothing: observe mode, nothing enforced (the policy says quarantine)');
    expect(notice.attachments.get('flooding-records.csv')).toMatch(/^source,set,.*\r\n127\.20\.9\.7,fast,/);
  });

  it('counts a relay that never answers as failed, and tries again on a later verdict', async () => {
    // Accepts the connection and says nothing: the notice times out instead of hanging.
    const silent = net.createServer(() => undefined);
    const sockets = new Set<net.Socket>();
    silent.on('connection', (socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    });
    const relayPort = (silent.address() as net.AddressInfo).port;
    const test = await startNoticeProxy(noticesPolicy(`  relay: { address: "127.0.0.1:${relayPort}", timeoutMs: 300 }\n  batchDelayMs: 0\n`));
    await flood(test.port, '127.20.6.1');
    await waitForAsync(async () => (await metric(test.proxy, /^smtp_pushback_notices_total\{outcome="failed"\}/)) === 1, 10_000, 'the failed notice');
    expect(logged(test, 'notice to a source network failed; a later flooding verdict may try again'))
      .toEqual([expect.objectContaining({ to: 'abuse@school.example', sources: ['127.20.6.1'], err: expect.objectContaining({ message: expect.stringMatching(/greeting never received|timed out/i) }) })]);
    // The failed notice gave its claim back: the next flooding host of the school is tried, not suppressed.
    await flood(test.port, '127.20.6.2');
    await waitForAsync(async () => (await metric(test.proxy, /^smtp_pushback_notices_total\{outcome="failed"\}/)) === 2, 10_000, 'the second attempt');
    expect(await metric(test.proxy, /^smtp_pushback_notices_total\{outcome="suppressed"\}/)).toBe(0);
  });

  it('two proxies sharing Redis send one notice per contact between them', async () => {
    sink = await SmtpSink.start();
    const prefix = `pbtest:${process.pid}:${randomBytes(4).toString('hex')}:`;
    cleanups.push(() => deleteKeys(prefix));
    const policy = `state: { keyPrefix: "${prefix}" }\n${noticesPolicy(`  relay: { address: "127.0.0.1:${sink.port}" }\n  batchDelayMs: 0\n`)}`;
    const env = { PUSHBACK_REDIS_URL: TEST_REDIS_URL };
    const nodeA = await startNoticeProxy(policy, env);
    const nodeB = await startNoticeProxy(policy, env);
    await flood(nodeA.port, '127.20.5.1');
    await waitFor(() => sink!.messages.length === 1, 10_000, () => 'the notice from node A');
    // Another school host floods node B: B's SFDS flags it, but A already sent the school its notice.
    await flood(nodeB.port, '127.20.5.2');
    await waitForAsync(async () => (await metric(nodeB.proxy, /^smtp_pushback_notices_total\{outcome="suppressed"\}/)) === 1, 10_000, 'node B to suppress its notice');
    expect(logged(nodeB, 'notice to a source network suppressed: another node sent the contact a notice this period'))
      .toEqual([expect.objectContaining({ sources: ['127.20.5.2'], to: 'abuse@school.example' })]);
    expect(await metric(nodeB.proxy, /^smtp_pushback_notices_total\{outcome="sent"\}/)).toBe(0);
    expect(sink.messages).toHaveLength(1);
  });
});
