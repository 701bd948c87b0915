// What a test message became in a throwaway Postfix: the maildir files that carry its X-Test-Id,
// the queue id Postfix gave it (from Postfix's own Received line), and body hashes that compare the
// sent and the delivered body (maildir files use LF; Postfix and the sending MTA add headers only).
import { createHash } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import type { PostfixInstance } from './postfix.js';

const headScanBytes = 16_384;
const pollIntervalMs = 50;

/** A message with a unique X-Test-Id, CRLF line ends, a From, a Message-ID and a Date, so Postfix adds none. */
export function testMessage(testId: string, options: { body?: string | Buffer; headers?: string; bytes?: number } = {}): Buffer {
  const head = [
    `X-Test-Id: ${testId}`,
    'From: Sender <sender@sender.test>',
    'To: alice@example.test',
    `Subject: ${testId}`,
    `Message-ID: <${testId}@sender.test>`,
    'Date: Fri, 04 Dec 2026 00:00:00 +0000',
    ...(options.headers !== undefined ? [options.headers] : []),
  ].join('\r\n');
  let body: Buffer = Buffer.isBuffer(options.body) ? options.body : Buffer.from(options.body ?? `.leading dot\r\n..two dots\r\nid ${testId}\r\n`, 'utf8');
  if (options.bytes !== undefined) body = Buffer.concat([body, filler(options.bytes - body.length - head.length)]);
  return Buffer.concat([Buffer.from(`${head}\r\n\r\n`, 'utf8'), body]);
}

/** Deterministic CRLF lines of printable text, some starting with a dot, about `bytes` long. */
function filler(bytes: number): Buffer {
  const lines: string[] = [];
  let size = 0;
  for (let index = 0; size < bytes; index++) {
    const line = `${index % 40 === 0 ? '.' : ''}${index.toString(36).padStart(8, '0')} ${'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(2)}`;
    lines.push(line);
    size += line.length + 2;
  }
  return Buffer.from(`${lines.join('\r\n')}\r\n`, 'latin1');
}

/** sha256 of the body (after the first empty line), line ends as LF, as a maildir file holds it. */
export function bodyHash(message: Buffer): string {
  const text = message.toString('latin1').replace(/\r\n/g, '\n');
  const start = text.indexOf('\n\n');
  return createHash('sha256').update(Buffer.from(start < 0 ? '' : text.slice(start + 2), 'latin1')).digest('hex');
}

async function head(path: string): Promise<string> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(headScanBytes);
    const { bytesRead } = await handle.read(buffer, 0, headScanBytes, 0);
    return buffer.subarray(0, bytesRead).toString('latin1');
  } finally {
    await handle.close();
  }
}

/** Maildir files of user whose header block carries this X-Test-Id. */
export async function filesWithTestId(postfix: PostfixInstance, user: string, testId: string): Promise<string[]> {
  const found: string[] = [];
  for (const path of await postfix.mailboxFiles(user)) {
    const top = await head(path);
    const headerEnd = top.indexOf('\n\n');
    if ((headerEnd < 0 ? top : top.slice(0, headerEnd)).includes(`\nX-Test-Id: ${testId}\n`)) found.push(path);
  }
  return found;
}

/** Polls until user has a message with this X-Test-Id, then returns all of them (a duplicate shows as two). */
export async function waitForTestId(postfix: PostfixInstance, user: string, testId: string, timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const files = await filesWithTestId(postfix, user, testId);
    if (files.length > 0) return files;
    if (Date.now() > deadline) throw new Error(`${user}: no message ${testId} after ${timeoutMs} ms\n${(await postfix.readLog()).slice(-2_000)}`);
    await new Promise((resolve) => setTimeout(resolve, pollIntervalMs));
  }
}

export interface Delivered {
  path: string;
  queueId: string;
  bodySha256: string;
  content: Buffer;
}

/** The delivered file, its receiving queue id (topmost "by postfix.test ... id X") and its body hash. */
export async function readDelivered(path: string): Promise<Delivered> {
  const content = await readFile(path);
  const top = content.subarray(0, headScanBytes).toString('latin1');
  const queueId = /by postfix\.test \(Postfix\) with \S+ id ([0-9A-Za-z]+)/.exec(top)?.[1];
  if (queueId === undefined) throw new Error(`no Postfix Received line in ${path}:\n${top.slice(0, 1_000)}`);
  return { path, queueId, bodySha256: bodyHash(content), content };
}
