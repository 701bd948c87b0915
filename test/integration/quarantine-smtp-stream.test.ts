// The spool behind a real smtp-server DATA stream, as the listener will use it: what a client sends (dot-stuffed)
// is stored unstuffed and byte-exact; a spool that fills mid-message still lets smtp-server send our 452 after
// the final dot (the stream is drained); a client that drops mid-DATA leaves nothing on disk.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { QuarantineSpool, SpoolFullError } from '../../src/quarantine/spool.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

let dir: string;
let spool: QuarantineSpool;
let server: SMTPServer;
let port: number;
let writeErrors: unknown[];

async function start(limits: { maxBytes: number; maxMessages: number }): Promise<void> {
  spool = await QuarantineSpool.open(dir, limits, { hostname: 'proxy.test' });
  server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    onData(stream, session, callback) {
      const entry = {
        client: { address: session.remoteAddress, port: session.remotePort, helo: session.hostNameAppearsAs },
        mailFrom: { address: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', params: {} },
        recipients: session.envelope.rcptTo.map((rcpt) => rcpt.address),
        verdict: { reasons: ['test'], score: 1 },
      };
      spool.write(entry, stream).then(
        (meta) => callback(null, `2.0.0 quarantined as ${meta.id}`),
        (error: unknown) => {
          writeErrors.push(error);
          const full = error instanceof SpoolFullError;
          callback(Object.assign(new Error(full ? '4.3.4 Quarantine full, try later' : '4.3.0 Try later'), { responseCode: full ? 452 : 451 }));
        },
      );
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.server.address() as AddressInfo).port;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function dataDialog(): Promise<SmtpDialog> {
  const dialog = await SmtpDialog.connect(port);
  expect((await dialog.reply()).code).toBe(220);
  expect((await dialog.command('EHLO sender.test')).code).toBe(250);
  expect((await dialog.command('MAIL FROM:<s@sender.test>')).code).toBe(250);
  expect((await dialog.command('RCPT TO:<victim@example.test>')).code).toBe(250);
  expect((await dialog.command('DATA')).code).toBe(354);
  return dialog;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pushback-smtp-spool-'));
  writeErrors = [];
});

afterEach(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await spool.close();
  await rm(dir, { recursive: true, force: true });
});

it('stores what the client sent, unstuffed and byte-exact, and 250 carries the id', async () => {
  await start({ maxBytes: 10_000_000, maxMessages: 10 });
  const dialog = await dataDialog();
  const eightBit = Buffer.from([0xc3, 0xa4, 0xff, 0x0d, 0x0a]);
  dialog.write(Buffer.concat([Buffer.from('Subject: dots\r\n\r\n..one dot\r\n...two dots\r\n'), eightBit, Buffer.from('.\r\n')]));
  const reply = await dialog.reply();
  expect(reply.code).toBe(250);
  const id = /quarantined as (\S+)/.exec(reply.text)?.[1] as string;
  const stored = await readAll(await spool.readMessage(id));
  const expected = Buffer.concat([Buffer.from('Subject: dots\r\n\r\n.one dot\r\n..two dots\r\n'), eightBit]);
  expect(stored.subarray(stored.length - expected.length).equals(expected)).toBe(true);
  expect(stored.subarray(0, stored.length - expected.length).toString()).toMatch(
    new RegExp(`^Received: from sender\\.test \\(unknown \\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby proxy\\.test \\(smtp-pushback\\) with ESMTP id ${id}\\r\\n\\tfor <victim@example\\.test>; .+\\r\\n$`),
  );
  await dialog.command('QUIT');
});

it('a real client (nodemailer) gets 250 and the message body arrives intact', async () => {
  await start({ maxBytes: 10_000_000, maxMessages: 10 });
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, name: 'nm.sender.test' });
  const raw = 'From: s@sender.test\r\nTo: victim@example.test\r\nSubject: nm\r\n\r\n.leading dot\r\nbody\r\n';
  const info = await transport.sendMail({ envelope: { from: 's@sender.test', to: ['victim@example.test'] }, raw });
  expect(info.response).toMatch(/^250 2\.0\.0 quarantined as /);
  const [meta] = spool.list();
  expect(meta?.client.helo).toBe('nm.sender.test');
  expect((await readAll(await spool.readMessage(meta?.id as string))).toString()).toMatch(/\r\n\r\n\.leading dot\r\nbody\r\n$/);
  transport.close();
});

it('a spool that fills mid-message answers 452 after the final dot and leaves the session usable', async () => {
  await start({ maxBytes: 20_000, maxMessages: 10 });
  const dialog = await dataDialog();
  for (let line = 0; line < 1_000; line += 1) dialog.write(`filler line ${line} ${'x'.repeat(40)}\r\n`);
  dialog.write('.\r\n');
  const reply = await dialog.reply();
  expect(reply.code).toBe(452);
  expect(writeErrors).toHaveLength(1);
  expect((await dialog.command('RSET')).code).toBe(250);
  expect((await dialog.command('QUIT')).code).toBe(221);
  expect(spool.list()).toEqual([]);
  expect(await readdir(join(dir, 'tmp'))).toEqual([]);
});

it('a client that drops mid-DATA leaves nothing behind', async () => {
  await start({ maxBytes: 10_000_000, maxMessages: 10 });
  const dialog = await dataDialog();
  dialog.write('Subject: cut\r\n\r\nhalf a message\r\n');
  await new Promise((resolve) => setTimeout(resolve, 50));
  dialog.destroy();
  const deadline = Date.now() + 5_000;
  while (writeErrors.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(writeErrors).toHaveLength(1);
  expect(spool.list()).toEqual([]);
  expect(await readdir(join(dir, 'tmp'))).toEqual([]);
  expect(await readdir(join(dir, 'msg'))).toEqual([]);
});
