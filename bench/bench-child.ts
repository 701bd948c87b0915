// The load generators of the flood benchmark and the demo as child processes (bench/flood-legit.ts,
// bench/flood-attacker.ts), each with its own event loop and open-files limit: started with tsx, ready
// once it prints "ready", then one JSON SessionResult a line as each of its sessions ends.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { SessionResult } from './flood-client.js';
import { ROOT } from './servers.js';

export interface BenchChild {
  process: ChildProcess;
  /** Settles when the child has exited and every line it printed has been read. */
  done: Promise<void>;
}

/**
 * Starts `script` (relative to the repository) with `args`; resolves once it is ready. `interrupt`
 * (and this process's exit) kills it; `done` rejects when it exits non-zero other than by an interrupt.
 */
export async function startBenchChild(script: string, args: string[], record: (result: SessionResult) => void, interrupt: AbortSignal): Promise<BenchChild> {
  const child = spawn(process.execPath, [join(ROOT, 'node_modules/tsx/dist/cli.mjs'), join(ROOT, script), ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  const kill = (): void => void child.kill('SIGTERM');
  interrupt.addEventListener('abort', kill, { once: true });
  process.once('exit', kill);
  const closed = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
  let isReady = false;
  let ready: () => void = () => undefined;
  const loaded = new Promise<void>((resolve) => { ready = resolve; });
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line === 'ready') {
      isReady = true;
      return ready();
    }
    if (line.startsWith('{')) record(JSON.parse(line) as SessionResult);
  });
  const exitedEarly = closed.then(([code, signal]) => {
    if (!isReady) throw new Error(`${script} exited ${code ?? signal} before it was ready`);
  });
  await Promise.race([loaded, exitedEarly]);
  const done = closed.then(([code, signal]) => {
    interrupt.removeEventListener('abort', kill);
    process.off('exit', kill);
    if (code !== 0 && !interrupt.aborted) throw new Error(`${script} exited ${code ?? signal}`);
  });
  // Awaited by the caller when its phase ends; until then a failure must not count as unhandled.
  done.catch(() => undefined);
  return { process: child, done };
}
