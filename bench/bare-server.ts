// The ceiling of our stack: a bare smtp-server that accepts and discards every message, with the
// same library and version as the proxy but no relay, no logging and no policy. Run in its own
// process (`tsx bench/bare-server.ts PORT`, 0 for any) so it never shares an event loop with the
// benchmark driver; it prints {"listening":PORT} on stdout once it accepts connections.
import { SMTPServer } from 'smtp-server';

const requestedPort = Number(process.argv[2] ?? '0');
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  process.stderr.write(`usage: bare-server.ts PORT (got ${process.argv[2]})\n`);
  process.exit(2);
}

const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  hideSTARTTLS: true,
  disableReverseLookup: true,
  logger: false,
  // As large as the proxy's default policy, so SIZE checks cost the same on both.
  size: 10_240_000,
  maxClients: 100_000,
  onData(stream, _session, callback) {
    stream.on('end', () => callback());
    stream.resume();
  },
});
server.on('error', (error: Error) => process.stderr.write(`bare-server: ${error.message}\n`));

server.listen(requestedPort, '127.0.0.1', () => {
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : requestedPort;
  process.stdout.write(`${JSON.stringify({ listening: port })}\n`);
});

const stop = (): void => server.close(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
