// The flood benchmark's steady legitimate senders, in a process of their own: the attacker's
// thousands of sockets then cannot delay a legitimate client's reads in the benchmark's own event
// loop (one process for both showed a loop lag p99 of 14-37 ms, charged to every target alike).
// Usage (from bench/flood.ts): tsx bench/flood-legit.ts PORT SECONDS FIRST_FRESH_INDEX
// Prints "ready" once loaded, then one JSON SessionResult a line as each session ends; exits 0 when
// the phase's load is done, at once on SIGTERM (every socket reset).
import { SocketPool } from './flood-client.js';
import { runSteadyLegit } from './flood-scenarios.js';

const [port, seconds, firstFresh] = process.argv.slice(2).map(Number) as [number, number, number];
if (![port, seconds, firstFresh].every(Number.isFinite)) {
  process.stderr.write('usage: flood-legit.ts PORT SECONDS FIRST_FRESH_INDEX\n');
  process.exit(2);
}
const pool = new SocketPool();
const stop = new AbortController();
process.once('SIGTERM', () => {
  stop.abort();
  pool.closeAll();
  process.exit(0);
});
process.stdout.write('ready\n');
await runSteadyLegit(port, seconds, firstFresh, pool, stop.signal, (result) => process.stdout.write(`${JSON.stringify(result)}\n`));
pool.closeAll();
