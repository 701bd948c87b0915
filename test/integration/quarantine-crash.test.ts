// kill -9 during quarantine writes: a child process (test/support/spool-writer.ts) writes messages in a loop
// and prints each id once write() resolved. We SIGKILL it mid-run, reopen the spool and require that every
// printed id is there whole (bytes exactly as the child wrote them), that every entry present is whole, and
// that no temp file or half entry survives. Bounded: at most MAX_MESSAGES writes and KILL_DEADLINE_MS.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { QuarantineSpool } from '../../src/quarantine/spool.js';
import { messageBytes, sequenceOf } from '../support/spool-content.js';

const WRITER = join(import.meta.dirname, '../support/spool-writer.ts');
const MAX_MESSAGES = 5_000;
/** Kill once this many writes were acknowledged, plus a random few ms, so the kill lands mid-write. */
const KILL_AFTER_ACKS = 40;
const KILL_DEADLINE_MS = 20_000;

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pushback-crash-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

interface Run {
  acked: Map<string, number>;
  firstAckAtMs: number;
  lastAckAtMs: number;
  signal: NodeJS.Signals | null;
  stderr: string;
}

async function runAndKill(): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', WRITER, dir, String(MAX_MESSAGES)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const run: Run = { acked: new Map(), firstAckAtMs: 0, lastAckAtMs: 0, signal: null, stderr: '' };
  child.stderr.on('data', (chunk: Buffer) => (run.stderr += chunk.toString()));
  const deadline = setTimeout(() => child.kill('SIGKILL'), KILL_DEADLINE_MS);
  let killScheduled = false;
  createInterface({ input: child.stdout }).on('line', (line) => {
    const match = /^(\S+) (\d+)$/.exec(line);
    if (!match) return;
    run.acked.set(match[1] as string, Number(match[2]));
    run.lastAckAtMs = performance.now();
    if (run.acked.size === 1) run.firstAckAtMs = run.lastAckAtMs;
    if (run.acked.size >= KILL_AFTER_ACKS && !killScheduled) {
      killScheduled = true;
      setTimeout(() => child.kill('SIGKILL'), Math.floor(Math.random() * 15));
    }
  });
  // 'close' waits for stdout to end, so every line the child wrote before it died has been read.
  const [, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  clearTimeout(deadline);
  run.signal = signal;
  return run;
}

it('every acknowledged message survives kill -9 whole, and nothing partial remains', async () => {
  const run = await runAndKill();
  expect(run.stderr).toBe('');
  expect(run.signal).toBe('SIGKILL');
  expect(run.acked.size).toBeGreaterThanOrEqual(KILL_AFTER_ACKS);

  const spool = await QuarantineSpool.open(dir, { maxBytes: 1e12, maxMessages: 1e9 });
  try {
    const entries = spool.list();
    const ids = new Set(entries.map((meta) => meta.id));
    for (const id of run.acked.keys()) expect(ids.has(id), `acknowledged ${id} is missing`).toBe(true);
    // At most the one write that finished after the last line reached the pipe.
    expect(entries.length - run.acked.size).toBeLessThanOrEqual(1);

    for (const meta of entries) {
      const sequence = sequenceOf(meta.mailFrom.address);
      if (run.acked.has(meta.id)) expect(run.acked.get(meta.id)).toBe(sequence);
      const stored = await readAll(await spool.readMessage(meta.id));
      const expected = messageBytes(sequence);
      expect(stored.length).toBe(meta.sizeBytes);
      const header = stored.subarray(0, stored.length - expected.length).toString('latin1');
      expect(header).toMatch(new RegExp(`^Received: from [^\\r]+\\r\\n\\tby [^\\r]+ id ${meta.id}\\r\\n\\tfor <[^>]+>; [^\\r]+\\r\\n$`));
      expect(stored.subarray(stored.length - expected.length).equals(expected), `${meta.id} bytes differ`).toBe(true);
    }

    // What the kill left half-done was repaired at open and is gone now.
    expect(spool.openReport.damaged).toEqual([]);
    expect(spool.openReport.orphanMetadataRemoved).toEqual([]);
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
    expect((await readdir(join(dir, 'msg'))).sort()).toEqual([...ids].map((id) => `${id}.eml`).sort());
    expect((await readdir(join(dir, 'meta'))).sort()).toEqual([...ids].map((id) => `${id}.json`).sort());

    const perMessageMs = (run.lastAckAtMs - run.firstAckAtMs) / Math.max(1, run.acked.size - 1);
    console.info(
      `quarantine crash test: ${run.acked.size} acknowledged writes, ${perMessageMs.toFixed(2)} ms per message; ` +
        `open repaired ${JSON.stringify(spool.openReport)}`,
    );
  } finally {
    await spool.close();
  }
});
