// Child process for the quarantine crash test: writes messages 0..count-1 (see spool-content.ts) into a spool,
// one at a time, and prints "<id> <sequence>" the moment each write() resolves, the point where the proxy would
// answer 250. The test kills it with SIGKILL mid-run. Usage: node --import tsx spool-writer.ts DIR COUNT
import { QuarantineSpool } from '../../src/quarantine/spool.js';
import { messageBytes, messageStream, newEntry } from './spool-content.js';

const [dir, countText] = process.argv.slice(2);
if (!dir || !countText) throw new Error('usage: spool-writer.ts DIR COUNT');
const count = Number(countText);

const spool = await QuarantineSpool.open(dir, { maxBytes: 1e12, maxMessages: 1e9 });
process.stdout.write(`open ${JSON.stringify(spool.openReport)}\n`);
for (let sequence = 0; sequence < count; sequence += 1) {
  const meta = await spool.write(newEntry(sequence), messageStream(messageBytes(sequence), sequence));
  // Synchronous on Linux pipes: once this returns, the parent will read the line even if we die next.
  process.stdout.write(`${meta.id} ${sequence}\n`);
}
await spool.close();
process.stdout.write('done\n');
