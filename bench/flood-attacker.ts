// One of the processes that share an attack of the flood benchmark (Scenario.processes): each may
// open only as many sockets as the open-files limit allows, so an idle flood that must outnumber the
// proxy's default maxClients (itself sized to that limit) runs from several.
// Usage (from bench/flood.ts): tsx bench/flood-attacker.ts SCENARIO PORT PART PARTS WINDOW_MS
// Prints "ready", then waits for the line "start" on stdin (the attack's start), then prints one
// JSON SessionResult a line as each attack connection ends. The line "hold-end" on stdin: the
// legitimate load has ended, cut what is still held. SIGTERM: stop at once (every socket reset).
// (Not SIGUSR1: Node starts its inspector on it.)
import { setMaxListeners } from 'node:events';
import { createInterface } from 'node:readline';
import { SocketPool } from './flood-client.js';
import { SCENARIOS } from './flood-scenarios.js';

const [id, ...numbers] = process.argv.slice(2);
const [port, part, parts, windowMs] = numbers.map(Number) as [number, number, number, number];
const scenario = SCENARIOS.find((candidate) => candidate.id === id);
if (!scenario?.attack || ![port, part, parts, windowMs].every(Number.isFinite)) {
  process.stderr.write('usage: flood-attacker.ts SCENARIO PORT PART PARTS WINDOW_MS\n');
  process.exit(2);
}
const pool = new SocketPool();
const stop = new AbortController();
const window = new AbortController();
const legitEnded = new AbortController();
const attackSignal = AbortSignal.any([window.signal, stop.signal]);
const holdSignal = AbortSignal.any([legitEnded.signal, stop.signal]);
for (const signal of [stop.signal, attackSignal, holdSignal]) setMaxListeners(0, signal);
process.once('SIGTERM', () => {
  stop.abort();
  pool.closeAll();
  process.exit(0);
});
let begin: () => void = () => undefined;
const started = new Promise<void>((resolve) => { begin = resolve; });
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'start') begin();
  if (line === 'hold-end') legitEnded.abort();
});
const emit = (result: unknown): void => void process.stdout.write(`${JSON.stringify(result)}\n`);
process.stdout.write('ready\n');
await started;
const timer = setTimeout(() => window.abort(), windowMs);
await scenario.attack({
  port, pool, attackSignal, holdSignal, phaseSignal: stop.signal, share: { index: part, count: parts },
  attack: emit, flash: emit, peakHeld: () => undefined,
});
clearTimeout(timer);
pool.closeAll();
// A pipe takes 64 KB at once and Node queues the rest: exit only once every result line is written (the
// write's callback runs after those before it), or the cut connections' lines are lost.
await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
// stdin stays open (the parent's pipe): leave without waiting for it.
process.exit(0);
