// The lines of one NetFlow input, streamed: a CSV file as it is, standard input ("-"), or an nfcapd capture
// file through `nfdump -r FILE -o csv` run as a child process (with TZ=UTC, so its times read as UTC, and a
// filter so it only prints TCP flows to the SMTP ports). The kind is told by the first bytes: nfcapd's magic,
// text, or neither. Every wait has a limit: the first bytes, and each next line (an idle time-out); on a
// time-out the child is killed and the input fails with the reason.
import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

export type InputKind = 'csv' | 'nfcapd' | 'stdin';

/** nfcapd files (nfdump 1.6 and 1.7, any compression) begin with the 16-bit magic 0xA50C, little-endian. */
const NFCAPD_MAGIC = Buffer.from([0x0c, 0xa5]);
const SNIFF_BYTES = 4_096;
const NFDUMP = 'nfdump';
/** nfdump's own messages kept for the error report; it writes little, so the tail is enough. */
const STDERR_TAIL_CHARS = 2_000;

export class InputError extends Error {}

/** How an input is named in messages: its path, or "stdin" for "-". */
export function inputName(file: string): string {
  return file === '-' ? 'stdin' : file;
}

export async function inputKind(file: string, timeoutMs: number): Promise<InputKind> {
  if (file === '-') return 'stdin';
  const sample = await withTimeout(readStart(file), timeoutMs, `${file}: no data within ${timeoutMs} ms`);
  if (sample.subarray(0, 2).equals(NFCAPD_MAGIC)) return 'nfcapd';
  if (!sample.includes(0)) return 'csv';
  throw new InputError(`${file}: neither CSV text nor an nfcapd file (no nfcapd magic 0xA50C)`);
}

async function readStart(file: string): Promise<Buffer> {
  let handle;
  try {
    handle = await open(file, 'r');
    const buffer = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, SNIFF_BYTES, 0);
    return buffer.subarray(0, bytesRead);
  } catch (error) {
    throw new InputError(`${file}: ${(error as Error).message}`);
  } finally {
    await handle?.close();
  }
}

export interface LineOptions {
  /** Longest wait for the next line (nfdump may filter a long stretch of a big file before printing one). */
  idleTimeoutMs: number;
  /** nfdump filter expression, e.g. "proto tcp and (dst port 25)". */
  nfdumpFilter: string;
  /** nfdump's messages on stderr, one line at a time (it may warn and go on). */
  onNfdumpMessage: (line: string) => void;
}

/** The input's lines in order; throws InputError when it cannot be read to the end. */
export async function* inputLines(file: string, kind: InputKind, options: LineOptions): AsyncGenerator<string> {
  if (kind !== 'nfcapd') {
    yield* streamLines(kind === 'stdin' ? process.stdin : createReadStream(file), file, options.idleTimeoutMs);
    return;
  }
  const child = spawnNfdump(file, options);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  const spawnFailed = new Promise<never>((_, reject) => child.once('error', (error: NodeJS.ErrnoException) => {
    reject(new InputError(error.code === 'ENOENT'
      ? `${file}: is an nfcapd file, and reading it needs nfdump, which is not installed (Debian: apt-get install nfdump)`
      : `${file}: cannot run nfdump: ${error.message}`));
  }));
  spawnFailed.catch(() => undefined);
  let stderrTail = '';
  let reportedError = false;
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderrTail = `${stderrTail}${line}\n`.slice(-STDERR_TAIL_CHARS);
    // nfdump 1.7 exits 0 after "Open file ...: bad magic" or "appendix offset error": its words are the signal.
    if (/error/i.test(line)) reportedError = true;
    options.onNfdumpMessage(line);
  });
  try {
    yield* streamLines(child.stdout!, file, options.idleTimeoutMs);
    const { code, signal } = await withTimeout(Promise.race([spawnFailed, exited]), options.idleTimeoutMs, `${file}: nfdump did not exit within ${options.idleTimeoutMs} ms of its last line`);
    if (code !== 0) throw new InputError(`${file}: nfdump ${signal ? `was killed by ${signal}` : `exited with ${code}`}${stderrTail ? `: ${stderrTail.trim()}` : ''}`);
    if (reportedError) throw new InputError(`${file}: nfdump reported an error reading it (see its messages above)`);
  } catch (error) {
    // A failed spawn also ends stdout at once: report why nfdump never ran, not an empty input.
    await Promise.race([spawnFailed, Promise.resolve()]);
    throw error;
  } finally {
    stopChild(child);
  }
}

function spawnNfdump(file: string, options: LineOptions): ChildProcess {
  return spawn(NFDUMP, ['-r', file, '-o', 'csv', options.nfdumpFilter], {
    env: { ...process.env, TZ: 'UTC' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Lines of a stream; fails with InputError on a read error or when no line comes within idleTimeoutMs. */
async function* streamLines(input: Readable, file: string, idleTimeoutMs: number): AsyncGenerator<string> {
  const lines = createInterface({ input, crlfDelay: Infinity });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    input.destroy(new Error(`no data for ${idleTimeoutMs} ms`));
  }, idleTimeoutMs);
  try {
    for await (const line of lines) {
      timer.refresh();
      yield line;
    }
    if (timedOut) throw new Error(`no data for ${idleTimeoutMs} ms`);
  } catch (error) {
    throw error instanceof InputError ? error : new InputError(`${inputName(file)}: ${(error as Error).message}`);
  } finally {
    clearTimeout(timer);
    lines.close();
    if (input !== process.stdin) input.destroy();
  }
}

function stopChild(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  // nfdump stops at once on SIGTERM; the KILL is for one stuck on a dead disk, and must not hold the process.
  setTimeout(() => child.kill('SIGKILL'), 2_000).unref();
}

async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new InputError(message)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
