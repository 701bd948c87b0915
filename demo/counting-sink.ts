// The demo's stand-in for Postfix: an SMTP server on loopback that accepts every message and counts it
// by the kind its Message-ID names (bench/flood-scenarios.ts writes <legit-17@bench.test>), so the demo
// reports what really came out of the proxy, not what the senders were told.
import { SMTPServer } from 'smtp-server';
import { messageKind } from '../bench/flood-scenarios.js';

/** The start of a message searched for its Message-ID: the bench's headers fit in far less. */
const HEADER_BYTES = 8 * 1024;

export interface CountingSink {
  port: number;
  /** Messages accepted, by kind ("legit", ...; "other" without a bench Message-ID). */
  accepted(kind: string): number;
  close(): Promise<void>;
}

export async function startCountingSink(): Promise<CountingSink> {
  const counts = new Map<string, number>();
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideSTARTTLS: true,
    disableReverseLookup: true,
    logger: false,
    size: 10_240_000,
    onData(stream, _session, callback) {
      let head = '';
      stream.on('data', (chunk: Buffer) => {
        if (head.length < HEADER_BYTES) head += chunk.toString('latin1');
      });
      stream.on('end', () => {
        const messageId = /^Message-ID:\s*<([^>]+)>/im.exec(head)?.[1];
        const kind = messageKind(messageId ?? '') ?? 'other';
        counts.set(kind, (counts.get(kind) ?? 0) + 1);
        callback(null, 'Ok: queued by the demo sink');
      });
    },
  });
  server.on('error', (error: Error) => process.stderr.write(`demo sink: ${error.message}\n`));
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.server.address();
  if (typeof address !== 'object' || address === null) throw new Error('demo sink: no port from the OS');
  return {
    port: address.port,
    accepted: (kind) => counts.get(kind) ?? 0,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
