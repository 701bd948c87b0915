// The quarantine spool on a real directory: byte-exact round trips, our one Received header, the metadata
// record, failures that must leave nothing behind, limits, and what open() repairs after a crash.
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EntryNotFoundError, QuarantineSpool, SpoolFullError, type SpoolLimits } from '../../src/quarantine/spool.js';
import { SpoolLockedError } from '../../src/quarantine/spool-lock.js';
import { MessageStreamClosedError } from '../../src/quarantine/message-source.js';
import { messageBytes, messageStream, newEntry } from '../support/spool-content.js';

const RECEIVED_AT_MS = Date.UTC(2025, 0, 31, 23, 59, 59, 123);
const BIG: SpoolLimits = { maxBytes: 100_000_000, maxMessages: 1_000 };

let dir: string;
let spools: QuarantineSpool[];
let randomCounter: number;

async function openSpool(limits: SpoolLimits = BIG): Promise<QuarantineSpool> {
  const spool = await QuarantineSpool.open(dir, limits, {
    hostname: 'proxy.test',
    nowMs: () => RECEIVED_AT_MS,
    randomHex: () => (randomCounter++).toString(16).padStart(10, '0'),
  });
  spools.push(spool);
  return spool;
}

async function closeAll(): Promise<void> {
  await Promise.all(spools.splice(0).map((spool) => spool.close()));
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function filesIn(sub: string): Promise<string[]> {
  return (await readdir(join(dir, sub))).sort();
}

/** A stream that delivers `before` and then fails the way a dropped client does. */
function droppingStream(before: Buffer, how: 'error' | 'close'): Readable {
  let sent = false;
  return new Readable({
    read() {
      if (!sent) {
        sent = true;
        this.push(before);
        return;
      }
      setImmediate(() => (how === 'error' ? this.destroy(new Error('ECONNRESET')) : this.destroy()));
    },
  });
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pushback-spool-'));
  spools = [];
  randomCounter = 1;
});

afterEach(async () => {
  await closeAll();
  await rm(dir, { recursive: true, force: true });
});

describe('QuarantineSpool entry ids', () => {
  it('are shaped like Postfix queue ids, re-drawn on a clash with a live entry, and listed in arrival order', async () => {
    // The same random digits twice, then fresh ones: the second write must not take the first's id.
    const draws = ['00000000aa', '00000000aa', '00000000bb'];
    const spool = await QuarantineSpool.open(dir, BIG, { hostname: 'proxy.test', nowMs: () => RECEIVED_AT_MS, randomHex: () => draws.shift() ?? 'cccccccccc' });
    spools.push(spool);
    const first = await spool.write(newEntry(1), messageStream(messageBytes(1), 1));
    const second = await spool.write(newEntry(2), messageStream(messageBytes(2), 2));
    expect(first.id).toMatch(/^[0-9A-F]{11}$/);
    expect(second.id).toMatch(/^[0-9A-F]{11}$/);
    expect(second.id).not.toBe(first.id);
    expect((await readAll(await spool.readMessage(first.id))).toString('latin1')).toContain('message 1');
    expect(spool.list().map((meta) => meta.id)).toEqual([first.id, second.id]);
  });

  it('loads a spool written with the earlier time-stamped ids', async () => {
    const spool = await openSpool();
    const meta = await spool.write(newEntry(1), messageStream(messageBytes(1), 1));
    await spool.close();
    spools = [];
    const legacy = '20250131T235959123Z-00000000ff';
    for (const [sub, extension] of [['meta', '.json'], ['msg', '.eml']] as const) {
      const text = await readFile(join(dir, sub, `${meta.id}${extension}`), 'latin1');
      await writeFile(join(dir, sub, `${legacy}${extension}`), extension === '.json' ? text.replace(meta.id, legacy) : text, 'latin1');
      await rm(join(dir, sub, `${meta.id}${extension}`));
    }
    const reopened = await openSpool();
    expect(reopened.list().map((entry) => entry.id)).toEqual([legacy]);
    expect(reopened.get(legacy)?.recipients).toEqual(meta.recipients);
  });
});

describe('QuarantineSpool write and read', () => {
  it('stores the unstuffed message byte for byte behind exactly one Received header', async () => {
    const spool = await openSpool();
    const body = Buffer.concat([
      Buffer.from('Subject: dots\r\n\r\n.\r\n..two\r\n.starts with a dot\r\n'),
      Buffer.from([0xe2, 0x82, 0xac, 0x80, 0xff, 0x0d, 0x0a]),
      messageBytes(3),
    ]);
    const meta = await spool.write(newEntry(5), messageStream(body, 5));
    const stored = await readAll(await spool.readMessage(meta.id));
    const header =
      'Received: from sender.test (mx.sender.test [192.0.2.5])\r\n' +
      `\tby proxy.test (smtp-pushback) with ESMTP id ${meta.id}\r\n` +
      '\tfor <victim@example.test>; Fri, 31 Jan 2025 23:59:59 +0000\r\n';
    expect(stored.subarray(0, header.length).toString('latin1')).toBe(header);
    expect(stored.subarray(header.length).equals(body)).toBe(true);
    expect(stored.toString('latin1').split('(smtp-pushback)')).toHaveLength(2);
    expect(meta.sizeBytes).toBe(stored.length);
  });

  it('leaves the for-clause out when there are several recipients, and writes IPv6 literals', async () => {
    const spool = await openSpool();
    const entry = newEntry(1, {
      recipients: ['a@example.test', 'b@example.test'],
      client: { address: '2001:db8::25', port: 25, helo: 'v6.sender.test' },
      protocol: 'ESMTPS',
    });
    const meta = await spool.write(entry, Readable.from([Buffer.from('Subject: x\r\n\r\nhi\r\n')]));
    const text = (await readAll(await spool.readMessage(meta.id))).toString('latin1');
    expect(text).toMatch(/^Received: from v6\.sender\.test \(unknown \[IPv6:2001:db8::25\]\)\r\n\tby proxy\.test \(smtp-pushback\) with ESMTPS id \S+; Fri/);
    expect(text).not.toContain('for <');
  });

  it('records the envelope, client, verdict and bookkeeping in the metadata file', async () => {
    const spool = await openSpool();
    const meta = await spool.write(newEntry(7), messageStream(messageBytes(7), 7));
    expect(meta).toMatchObject({
      version: 1,
      // 123 ms and 1 µs (0x000001 % 1000) into the second: 123001 = 0x1E079, then the 6 random digits.
      id: '1E079000001',
      receivedAtMs: RECEIVED_AT_MS,
      client: { address: '192.0.2.7', port: 40_007, hostname: 'mx.sender.test', helo: 'sender.test' },
      mailFrom: { address: 'writer-7@example.test', params: { BODY: '8BITMIME', SIZE: '12345' } },
      recipients: ['victim@example.test'],
      verdict: { reasons: ['status:danger', 'abnormal-pairs'], score: 7.5 },
      attempts: 0,
      nextAttemptAtMs: RECEIVED_AT_MS,
      state: 'held',
    });
    expect(meta.lastError).toBeUndefined();
    const onDisk = JSON.parse(await readFile(join(dir, 'meta', `${meta.id}.json`), 'utf8')) as unknown;
    expect(onDisk).toEqual(meta);
    expect(spool.get(meta.id)).toEqual(meta);
    expect(Object.isFrozen(meta.recipients)).toBe(true);
    expect(spool.stats()).toEqual({ entries: 1, bytes: meta.sizeBytes, byState: { held: 1, releasing: 0, released: 0, rejected: 0 } });
  });

  it('accepts any async iterable of bytes', async () => {
    const spool = await openSpool();
    async function* parts(): AsyncGenerator<Buffer | string> {
      yield Buffer.from('Subject: gen\r\n');
      yield '\r\nbody\r\n';
    }
    const meta = await spool.write(newEntry(2), parts());
    expect((await readAll(await spool.readMessage(meta.id))).toString('latin1')).toMatch(/\r\nSubject: gen\r\n\r\nbody\r\n$/);
  });
});

describe('QuarantineSpool failures leave nothing', () => {
  async function expectEmpty(spool: QuarantineSpool): Promise<void> {
    expect(spool.list()).toEqual([]);
    expect(spool.stats().bytes).toBe(0);
    expect(await filesIn('tmp')).toEqual([]);
    expect(await filesIn('msg')).toEqual([]);
    expect(await filesIn('meta')).toEqual([]);
    expect(spool.canAccept(BIG.maxBytes)).toBe(true);
  }

  it.each(['error', 'close'] as const)('a client drop midway (stream %s) rejects and removes the temp file', async (how) => {
    const spool = await openSpool();
    const write = spool.write(newEntry(1), droppingStream(messageBytes(1), how));
    if (how === 'close') await expect(write).rejects.toBeInstanceOf(MessageStreamClosedError);
    else await expect(write).rejects.toThrow('ECONNRESET');
    await expectEmpty(spool);
  });

  it('a throwing async iterable rejects and leaves nothing', async () => {
    const spool = await openSpool();
    async function* parts(): AsyncGenerator<Buffer> {
      yield messageBytes(1);
      throw new Error('socket gone');
    }
    await expect(spool.write(newEntry(1), parts())).rejects.toThrow('socket gone');
    await expectEmpty(spool);
  });

  it('an aborted write rejects with the signal reason and leaves nothing', async () => {
    const spool = await openSpool();
    const controller = new AbortController();
    const stalled = new Readable({ read() {} });
    stalled.push(messageBytes(1));
    const write = spool.write(newEntry(1), stalled, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error('DATA deadline')), 20);
    await expect(write).rejects.toThrow('DATA deadline');
    await expectEmpty(spool);
  });
});

describe('QuarantineSpool limits', () => {
  it('refuses a message beyond maxMessages before reading it', async () => {
    const spool = await openSpool({ maxBytes: 10_000_000, maxMessages: 2 });
    await spool.write(newEntry(1), messageStream(messageBytes(1), 1));
    expect(spool.canAccept()).toBe(true);
    await spool.write(newEntry(2), messageStream(messageBytes(2), 2));
    expect(spool.canAccept()).toBe(false);
    const third = messageStream(messageBytes(3), 3);
    await expect(spool.write(newEntry(3), third)).rejects.toMatchObject({ name: 'SpoolFullError', limit: 'messages' });
    // Unread, but drained: smtp-server replies only once the DATA stream has ended.
    await new Promise<void>((resolve) => (third.readableEnded ? resolve() : third.once('end', resolve)));
    expect(spool.stats().entries).toBe(2);
  });

  it('aborts a message that outgrows the remaining bytes, drains its stream, and keeps the others', async () => {
    const first = messageBytes(1);
    const spool = await openSpool({ maxBytes: first.length + 5_000, maxMessages: 10 });
    const kept = await spool.write(newEntry(1), messageStream(first, 1));
    expect(spool.canAccept(4_000)).toBe(true);
    expect(spool.canAccept(6_000)).toBe(false);
    const big = messageStream(Buffer.concat([messageBytes(2), messageBytes(2)]), 2);
    const error = await spool.write(newEntry(2), big).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(SpoolFullError);
    expect((error as SpoolFullError).limit).toBe('bytes');
    // The rest of the DATA stream drains, so smtp-server can send our 452.
    await new Promise<void>((resolve) => (big.readableEnded ? resolve() : big.once('end', resolve)));
    expect(spool.list().map((meta) => meta.id)).toEqual([kept.id]);
    expect(await filesIn('tmp')).toEqual([]);
    expect(spool.stats().bytes).toBe(kept.sizeBytes);
    expect(spool.canAccept(4_000)).toBe(true);
  });

  it('counts writes in progress against the limits', async () => {
    const spool = await openSpool({ maxBytes: 10_000_000, maxMessages: 1 });
    const pending = new Readable({ read() {} });
    const write = spool.write(newEntry(1), pending);
    expect(spool.canAccept()).toBe(false);
    await expect(spool.write(newEntry(2), Readable.from([Buffer.from('x')]))).rejects.toBeInstanceOf(SpoolFullError);
    pending.push(Buffer.from('Subject: slow\r\n\r\n'));
    pending.push(null);
    await write;
  });
});

describe('QuarantineSpool index, updates and removal', () => {
  it('lists by source prefix, time and state; updates and removals persist across reopen', async () => {
    let spool = await openSpool();
    const a = await spool.write(newEntry(10, { receivedAtMs: RECEIVED_AT_MS - 60_000 }), messageStream(messageBytes(10), 10));
    const b = await spool.write(newEntry(20), messageStream(messageBytes(20), 20));
    const c = await spool.write(
      newEntry(30, { client: { address: '::ffff:198.51.100.9', port: 1, helo: 'h' } }),
      messageStream(messageBytes(30), 30),
    );
    expect(spool.list().map((meta) => meta.id)).toEqual([a.id, b.id, c.id]);
    expect(spool.list({ sourceCidr: '192.0.2.0/28' }).map((meta) => meta.id)).toEqual([a.id]);
    expect(spool.list({ sourceCidr: '198.51.100.0/24' }).map((meta) => meta.id)).toEqual([c.id]);
    expect(spool.list({ sourceCidr: '192.0.2.20' }).map((meta) => meta.id)).toEqual([b.id]);
    expect(spool.list({ sinceMs: RECEIVED_AT_MS }).map((meta) => meta.id)).toEqual([b.id, c.id]);
    expect(() => spool.list({ sourceCidr: 'not-a-prefix' })).toThrow(RangeError);

    const updated = await spool.update(b.id, { state: 'releasing', attempts: 1, lastError: '451 try later' });
    expect(updated).toMatchObject({ state: 'releasing', attempts: 1, lastError: '451 try later' });
    const cleared = await spool.update(b.id, { state: 'held', nextAttemptAtMs: RECEIVED_AT_MS + 1, lastError: undefined });
    expect(cleared.lastError).toBeUndefined();
    await spool.update(c.id, { state: 'releasing' });
    await spool.remove(a.id);
    expect(spool.list({ state: 'held' }).map((meta) => meta.id)).toEqual([b.id]);
    await expect(spool.readMessage(a.id)).rejects.toBeInstanceOf(EntryNotFoundError);

    await closeAll();
    spool = await openSpool();
    expect(spool.list()).toEqual([cleared, spool.get(c.id)]);
    expect(spool.openReport.interruptedReleases).toEqual([c.id]);
    expect(spool.stats()).toMatchObject({ entries: 2, bytes: b.sizeBytes + c.sizeBytes, byState: { held: 1, releasing: 1 } });
    const stored = await readAll(await spool.readMessage(b.id));
    expect(stored.subarray(stored.length - messageBytes(20).length).equals(messageBytes(20))).toBe(true);
    expect(await filesIn('tmp')).toEqual([]);
  });

  it('serializes concurrent updates of one entry', async () => {
    const spool = await openSpool();
    const meta = await spool.write(newEntry(1), messageStream(messageBytes(1), 1));
    await Promise.all(Array.from({ length: 20 }, (_, attempts) => spool.update(meta.id, { attempts })));
    expect(spool.get(meta.id)?.attempts).toBe(19);
    await closeAll();
    expect((await openSpool()).get(meta.id)?.attempts).toBe(19);
  });

  it('answers EntryNotFoundError for unknown ids and ids that are not ids', async () => {
    const spool = await openSpool();
    for (const id of ['20250131T235959123Z-0000000000', '../spool.lock', '']) {
      expect(spool.get(id)).toBeUndefined();
      await expect(spool.readMessage(id)).rejects.toBeInstanceOf(EntryNotFoundError);
      await expect(spool.update(id, { attempts: 1 })).rejects.toBeInstanceOf(EntryNotFoundError);
      await expect(spool.remove(id)).rejects.toBeInstanceOf(EntryNotFoundError);
    }
  });
});

describe('QuarantineSpool open after a crash', () => {
  it('removes temp files, messages without metadata and metadata without messages; reports damaged records', async () => {
    let spool = await openSpool();
    const whole = await spool.write(newEntry(1), messageStream(messageBytes(1), 1));
    const lostMeta = await spool.write(newEntry(2), messageStream(messageBytes(2), 2));
    const lostMessage = await spool.write(newEntry(3), messageStream(messageBytes(3), 3));
    const damaged = await spool.write(newEntry(4), messageStream(messageBytes(4), 4));
    await closeAll();
    // A crash between the two renames, a crash mid-write, a disk that lost a file, a torn record.
    await rm(join(dir, 'meta', `${lostMeta.id}.json`));
    await writeFile(join(dir, 'tmp', '20250131T235959123Z-00000000ff.eml'), 'half a mess');
    await writeFile(join(dir, 'tmp', '20250131T235959123Z-00000000ff.json'), '{"vers');
    await rm(join(dir, 'msg', `${lostMessage.id}.eml`));
    await writeFile(join(dir, 'meta', `${damaged.id}.json`), '{"version":1,');
    await writeFile(join(dir, 'msg', 'README'), 'not ours');

    spool = await openSpool();
    expect(spool.openReport).toEqual({
      tempFilesRemoved: 2,
      orphanMessagesRemoved: [lostMeta.id],
      orphanMetadataRemoved: [lostMessage.id],
      damaged: [damaged.id],
      interruptedReleases: [],
    });
    expect(spool.list().map((meta) => meta.id)).toEqual([whole.id]);
    expect(await filesIn('tmp')).toEqual([]);
    expect(await filesIn('msg')).toEqual(['README', `${damaged.id}.eml`, `${whole.id}.eml`].sort());
    expect(await filesIn('meta')).toEqual([`${damaged.id}.json`, `${whole.id}.json`].sort());
  });

  it("allows one process per directory and takes over a dead owner's lock", async () => {
    await openSpool();
    await expect(openSpool()).rejects.toBeInstanceOf(SpoolLockedError);
    await closeAll();
    await writeFile(join(dir, 'spool.lock'), '2147483646\n');
    const spool = await openSpool();
    expect(spool.list()).toEqual([]);
  });
});
