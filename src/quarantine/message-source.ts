// Reads a message stream chunk by chunk into an async sink, one chunk at a time (the sink's disk write is the
// backpressure). Two kinds of source: a Readable (smtp-server's DATA stream) and any async iterable of bytes.
// Failure outcomes: the source errors, closes before its end (smtp-server destroys the DATA stream when the
// client drops), the sink throws, or the signal aborts; pumpMessage then rejects with that reason.
import { Readable } from 'node:stream';

export type MessageSource = Readable | AsyncIterable<Buffer | Uint8Array | string>;

export type ChunkSink = (chunk: Buffer) => Promise<void>;

export class MessageStreamClosedError extends Error {
  constructor() {
    super('message stream closed before its end (client dropped?)');
    this.name = 'MessageStreamClosedError';
  }
}

export async function pumpMessage(source: MessageSource, sink: ChunkSink, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  if (source instanceof Readable) return pumpReadable(source, sink, signal);
  return pumpIterable(source, sink, signal);
}

/**
 * For a message we will not read (any more): a live Readable is resumed so it drains to its end (smtp-server
 * sends its reply only after the DATA stream ended, and a paused stream never would), with an error listener
 * so a late stream error is not an uncaught exception. Other sources are left to their owner.
 */
export function abandonMessage(source: MessageSource): void {
  if (!(source instanceof Readable) || source.destroyed || source.readableEnded) return;
  source.on('error', () => undefined);
  source.resume();
}

/** Strings are taken as UTF-8, as Node does by default; the SMTP layer hands us Buffers anyway. */
function toBuffer(chunk: Buffer | Uint8Array | string): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk, 'utf8');
  return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

/**
 * Event-driven rather than `for await`, because breaking out of a Readable's async iterator destroys the
 * stream. When we give up early (the sink threw: spool full, disk error; or the signal aborted) the stream
 * is abandoned: left alive and drained (see abandonMessage).
 */
function pumpReadable(source: Readable, sink: ChunkSink, signal?: AbortSignal): Promise<void> {
  // Someone else already read it, or it is gone: waiting for its 'end' would wait forever.
  if (source.destroyed || source.readableEnded) return Promise.reject(new MessageStreamClosedError());
  return new Promise<void>((resolve, reject) => {
    const queue: Buffer[] = [];
    let writing = false;
    let ended = false;
    let settled = false;

    const settle = (error?: unknown): void => {
      if (settled) return;
      settled = true;
      source.off('data', onData);
      source.off('end', onEnd);
      source.off('error', onError);
      source.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
      if (error === undefined) return resolve();
      abandonMessage(source);
      reject(error);
    };
    const drain = (): void => {
      if (settled) return;
      const chunk = queue.shift();
      if (chunk === undefined) {
        writing = false;
        if (ended) settle();
        else source.resume();
        return;
      }
      writing = true;
      sink(chunk).then(drain, settle);
    };
    const onData = (chunk: Buffer | string): void => {
      queue.push(toBuffer(chunk));
      source.pause();
      if (!writing) drain();
    };
    const onEnd = (): void => {
      ended = true;
      if (!writing) settle();
    };
    const onError = (error: Error): void => settle(error);
    const onClose = (): void => {
      if (!source.readableEnded) settle(new MessageStreamClosedError());
    };
    const onAbort = (): void => settle(signal?.reason);

    source.on('data', onData);
    source.on('end', onEnd);
    source.on('error', onError);
    source.on('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

async function pumpIterable(
  source: AsyncIterable<Buffer | Uint8Array | string>,
  sink: ChunkSink,
  signal?: AbortSignal,
): Promise<void> {
  const iterator = source[Symbol.asyncIterator]();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => undefined);
  try {
    for (;;) {
      const step = await Promise.race([iterator.next(), aborted]);
      if (step.done) return;
      await sink(toBuffer(step.value));
    }
  } catch (error) {
    // Let a generator run its finally blocks; its own failure to do so must not hide ours.
    await Promise.resolve(iterator.return?.()).catch(() => undefined);
    throw error;
  } finally {
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}
