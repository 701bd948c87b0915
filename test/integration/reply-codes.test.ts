// Every reply the proxy makes itself carries an RFC 3463 enhanced status code of its own class
// (2.x.x with 2yz, 4.x.x with 4yz, 5.x.x with 5yz), as Postfix's do: driven on the wire here, reply
// by reply, and checked in the source for the replies too costly to provoke (internal errors, a full
// spool). Exceptions, by RFC 2034 §3: the greeting and the replies to HELO and EHLO; 354 and other 3xx.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpstream, type FakeUpstreamOptions } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { SmtpDialog, type Reply } from '../support/smtp-dialog.js';

let upstream: FakeUpstream | undefined;
let proxy: TestProxy | undefined;
const dialogs: SmtpDialog[] = [];

afterEach(async () => {
  for (const dialog of dialogs.splice(0)) dialog.destroy();
  await proxy?.stop();
  await upstream?.close();
  proxy = undefined;
  upstream = undefined;
});

async function start(yaml = '', upstreamOptions: FakeUpstreamOptions = {}): Promise<TestProxy> {
  upstream = await FakeUpstream.start(upstreamOptions);
  proxy = await startTestProxy(upstream.address, yaml);
  return proxy;
}

/** The reply, checked: its code, its text, and an enhanced code of the same class before the text. */
function expectEnhanced(reply: Reply, code: number, text: RegExp): void {
  expect(reply.code).toBe(code);
  expect(reply.text).toMatch(new RegExp(`^${Math.floor(code / 100)}\\.\\d{1,3}\\.\\d{1,3} `));
  expect(reply.text).toMatch(text);
}

/** A client closed after the test, so the proxy stops without waiting for it. */
async function connect(port: number, localAddress: string): Promise<SmtpDialog> {
  const dialog = await SmtpDialog.connect(port, { localAddress });
  dialogs.push(dialog);
  return dialog;
}

async function greeted(port: number, localAddress = '127.40.0.1'): Promise<SmtpDialog> {
  const dialog = await connect(port, localAddress);
  expect((await dialog.reply()).code).toBe(220);
  return dialog;
}

describe('the proxy\'s own replies carry enhanced status codes', () => {
  it('in a session: sequence, syntax, parameters, limits, size, RSET, NOOP, QUIT', async () => {
    const test = await start('limits:\n  maxRecipients: 1\n  maxMessageBytes: 1000\n');
    const dialog = await greeted(test.port);
    expectEnhanced(await dialog.command('MAIL FROM:<a@sender.test>'), 503, /send HELO\/EHLO first/);
    expectEnhanced(await dialog.command('BOGUS'), 502, /command not recognized/);
    expect((await dialog.command('EHLO client.test')).code).toBe(250);
    expectEnhanced(await dialog.command('NOOP'), 250, /Ok/);
    expectEnhanced(await dialog.command('RCPT TO:<b@example.test>'), 503, /need MAIL command/);
    expectEnhanced(await dialog.command('DATA'), 503, /need RCPT command/);
    expectEnhanced(await dialog.command('MAIL FROM:broken<'), 501, /syntax/i);
    expectEnhanced(await dialog.command('MAIL FROM:<a@sender.test> SIZE=5000'), 552, /Message size exceeds fixed limit/);
    expectEnhanced(await dialog.command('MAIL FROM:<a@sender.test> AUTH=<>'), 555, /Unsupported option/);
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expectEnhanced(await dialog.command('MAIL FROM:<a@sender.test>'), 503, /nested MAIL command/);
    expect((await dialog.command('RCPT TO:<one@example.test>')).code).toBe(250);
    expectEnhanced(await dialog.command('RCPT TO:<two@example.test>'), 452, /too many recipients/);
    expect((await dialog.command('DATA')).code).toBe(354);
    expectEnhanced(await dialog.command(`Subject: big\r\n\r\n${'x'.repeat(2_000)}\r\n.`), 552, /message/);
    expectEnhanced(await dialog.command('RSET'), 250, /Ok/);
    expectEnhanced(await dialog.command('QUIT'), 221, /Bye/);
  });

  it('after every recipient was refused, and at the hard error limit', async () => {
    const test = await start('', { recipientReplies: { 'no@example.test': '550 5.1.1 <no@example.test>: Recipient address rejected' } });
    const dialog = await greeted(test.port);
    await dialog.command('EHLO client.test');
    await dialog.command('MAIL FROM:<a@sender.test>');
    expect((await dialog.command('RCPT TO:<no@example.test>')).code).toBe(550);
    expectEnhanced(await dialog.command('DATA'), 554, /no valid recipients/);
    let last: Reply | undefined;
    for (let index = 0; index < 25 && !dialog.closed; index += 1) {
      last = await dialog.command('RCPT TO:<no@example.test>').catch(() => last);
      if (last?.code === 421) break;
    }
    expectEnhanced(last as Reply, 421, /too many errors/);
  });

  it('closing replies: line too long, ten unknown commands, HTTP, early talker, idle time-out, deadline', async () => {
    const test = await start('limits:\n  maxLineBytes: 600\n  idleTimeoutSeconds: 1\n  sessionDeadlineSeconds: 2\n');
    const long = await greeted(test.port);
    expectEnhanced(await long.command(`EHLO ${'a'.repeat(2_000)}`), 421, /command line too long/);
    const unknown = await greeted(test.port);
    for (let index = 0; index < 9; index += 1) await unknown.command(`BOGUS${index}`);
    expectEnhanced(await unknown.command('BOGUS9'), 421, /too many errors/);
    const http = await greeted(test.port);
    expectEnhanced(await http.command('GET / HTTP/1.1'), 421, /HTTP requests not allowed/);
    const early = await connect(test.port, '127.40.0.2');
    early.write('EHLO too.early\r\n');
    expectEnhanced(await early.reply(), 421, /you talk too soon/);
    const idle = await greeted(test.port, '127.40.0.3');
    expectEnhanced(await idle.reply(5_000), 421, /timeout exceeded/);
    const dripping = await greeted(test.port, '127.40.0.4');
    const drip = setInterval(() => dripping.write('NOOP\r\n'), 200);
    try {
      let reply = await dripping.reply(5_000);
      while (reply.code === 250) reply = await dripping.reply(5_000);
      expectEnhanced(reply, 421, /deadline exceeded/);
    } finally {
      clearInterval(drip);
    }
  });

  it('client slots: eviction, then too many connected clients', async () => {
    const test = await start('server:\n  maxClients: 1\n  evictAbovePercent: 100\n');
    const silent = await greeted(test.port, '127.40.1.1');
    const holder = await greeted(test.port, '127.40.1.2');
    expectEnhanced(await silent.reply(), 421, /too many connections, closing idle session/);
    await holder.command('EHLO holder.test');
    expect((await holder.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    const turnedAway = await connect(test.port, '127.40.1.3');
    expectEnhanced(await turnedAway.reply(), 421, /too many connected clients/);
  });

  it('concurrency: too many from one address, all of Postfix\'s processes busy', async () => {
    const test = await start('server:\n  maxSessionsPerAddress: 1\nupstream:\n  maxConnections: 1\n');
    const holder = await greeted(test.port, '127.40.1.4');
    await holder.command('EHLO holder.test');
    expect((await holder.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    // In DATA: never cut to make room, however long it is silent.
    expect((await holder.command('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await holder.command('DATA')).code).toBe(354);
    const sameAddress = await connect(test.port, '127.40.1.4');
    expectEnhanced(await sameAddress.reply(), 421, /too many connections from 127\.40\.1\.4/);
    const other = await greeted(test.port, '127.40.1.5');
    await other.command('EHLO other.test');
    expectEnhanced(await other.command('MAIL FROM:<a@sender.test>'), 451, /all server ports are busy/);
  });

  it('screen and set-up: deny list, a PROXY header without a client address, Postfix unreachable', async () => {
    const test = await start('pushback:\n  deny: [127.40.2.1]\nserver:\n  proxyProtocolFrom: [127.40.2.2]\n');
    const denied = await connect(test.port, '127.40.2.1');
    expectEnhanced(await denied.reply(), 554, /Service refused/);
    const balancer = await connect(test.port, '127.40.2.2');
    balancer.write('PROXY UNKNOWN\r\n');
    expectEnhanced(await balancer.reply(), 421, /PROXY header without a client address/);
    await upstream!.close();
    const stranded = await greeted(test.port, '127.40.2.3');
    await stranded.command('EHLO client.test');
    expectEnhanced(await stranded.command('MAIL FROM:<a@sender.test>'), 451, /temporarily unavailable/);
    upstream = undefined;
  });
});

describe('in the source', () => {
  /** Every `code: NNN, text: '...'` and `send(NNN, '...'` the proxy writes itself, outside upstream/ (Postfix's words). */
  function ownReplies(): Array<{ file: string; code: number; text: string }> {
    const found: Array<{ file: string; code: number; text: string }> = [];
    const walk = (dir: string): void => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const path = join(dir, entry.name);
        if (entry.isDirectory()) walk(path);
        else if (path.endsWith('.ts')) {
          const source = readFileSync(path, 'utf8');
          for (const match of source.matchAll(/(?:code: |send\()([2-5]\d\d),? (?:text: )?(['`])((?:(?!\2).)*)\2/g)) {
            found.push({ file: path, code: Number(match[1]), text: match[3] as string });
          }
        }
      }
    };
    walk('src');
    return found;
  }

  it('finds the replies, and each has an enhanced code of its class (HELO/EHLO syntax excepted)', () => {
    const replies = ownReplies();
    expect(replies.length).toBeGreaterThan(40);
    const missing = replies.filter(({ code, text }) => {
      if (code < 400 && code !== 221 && code !== 250) return false;
      // RFC 2034 §3: no enhanced code in replies to HELO and EHLO (Postfix: "501 Syntax: EHLO hostname").
      if (/^Syntax: \$\{/.test(text)) return false;
      return !new RegExp(`^${Math.floor(code / 100)}\\.\\d{1,3}\\.\\d{1,3}(?: |$)`).test(text);
    });
    expect(missing).toEqual([]);
  });
});
