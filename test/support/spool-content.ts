// Deterministic test messages for the quarantine spool: the bytes of message n follow from n alone, so a test
// can check any entry a killed writer left behind. Every message has 8-bit bytes, lines that start with a dot
// and CRLF line ends; sizes vary from about 1 KB to about 130 KB.
import { Readable } from 'node:stream';
import type { NewEntry } from '../../src/quarantine/spool-entry.js';

/** mulberry32: a tiny seeded PRNG, enough to vary content and chunking. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function messageBytes(sequence: number): Buffer {
  const random = prng(sequence + 1);
  const lines: Buffer[] = [
    Buffer.from(`From: writer-${sequence}@example.test\r\nTo: victim@example.test\r\nSubject: message ${sequence}\r\n\r\n`),
  ];
  const bodyLines = 20 + Math.floor(random() * 1700);
  for (let line = 0; line < bodyLines; line += 1) {
    const kind = random();
    if (kind < 0.1) lines.push(Buffer.from('.\r\n'));
    else if (kind < 0.2) lines.push(Buffer.from(`..leading dots ${line}\r\n`));
    else if (kind < 0.3) lines.push(Buffer.from([0xc3, 0xa4, 0x80, 0xff, 0x20, 0x2e, 0x0d, 0x0a]));
    else lines.push(Buffer.from(`line ${line} of message ${sequence} ${'x'.repeat(Math.floor(random() * 70))}\r\n`));
  }
  return Buffer.concat(lines);
}

/** The message as a Readable in uneven chunks, so writes cross chunk boundaries at arbitrary places. */
export function messageStream(bytes: Buffer, seed: number): Readable {
  const random = prng(seed ^ 0x5eed);
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < bytes.length; ) {
    const size = 1 + Math.floor(random() * 20_000);
    chunks.push(bytes.subarray(offset, offset + size));
    offset += size;
  }
  return Readable.from(chunks);
}

export function newEntry(sequence: number, overrides: Partial<NewEntry> = {}): NewEntry {
  return {
    client: { address: `192.0.2.${sequence % 250}`, port: 40_000 + (sequence % 20_000), hostname: 'mx.sender.test', helo: 'sender.test' },
    mailFrom: { address: `writer-${sequence}@example.test`, params: { BODY: '8BITMIME', SIZE: '12345' } },
    recipients: ['victim@example.test'],
    verdict: { reasons: ['status:danger', 'abnormal-pairs'], score: 7.5 },
    ...overrides,
  };
}

/** Recovers n from an entry's envelope, as the crash test only knows the ids the writer printed. */
export function sequenceOf(mailFrom: string): number {
  const match = /^writer-(\d+)@/.exec(mailFrom);
  if (!match) throw new Error(`not a spool-content sender: ${mailFrom}`);
  return Number(match[1]);
}
