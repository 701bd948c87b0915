// Child processes of the relay benchmark: servers under test and smtp-source runs. Each child leads
// its own process group, so one kill reaches whatever it forked (tsx, smtp-sink's privilege drop),
// and every child is registered so SIGINT, an error or a normal end leaves nothing behind.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';

/** Output kept per child: enough for error messages without growing without bound. */
const KEPT_OUTPUT_CHARS = 64 * 1024;

export interface Child {
  name: string;
  process: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Set once the child has exited; a server that exits during the benchmark has crashed. */
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
}

const live = new Set<Child>();

export function startChild(name: string, command: string, args: string[], options: SpawnOptions = {}): Child {
  const child = spawn(command, args, { ...options, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const keep = (text: string, chunk: Buffer): string => (text + chunk.toString()).slice(-KEPT_OUTPUT_CHARS);
  child.stdout?.on('data', (chunk: Buffer) => { stdout = keep(stdout, chunk); });
  child.stderr?.on('data', (chunk: Buffer) => { stderr = keep(stderr, chunk); });
  const handle: Child = { name, process: child, stdout: () => stdout, stderr: () => stderr, exited: undefined };
  child.on('error', (error) => { stderr = keep(stderr, Buffer.from(`spawn error: ${error.message}\n`)); });
  child.on('exit', (code, signal) => {
    handle.exited = { code, signal };
    live.delete(handle);
  });
  live.add(handle);
  return handle;
}

/** SIGTERM to the child's process group, SIGKILL after `graceMs`; resolves when the leader is gone. */
export async function stopChild(child: Child, graceMs = 3_000): Promise<void> {
  if (child.exited || child.process.pid === undefined) return;
  const exited = once(child.process, 'exit');
  signalGroup(child, 'SIGTERM');
  const timer = setTimeout(() => signalGroup(child, 'SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
  // Members that outlived their leader (none expected) get no second chance.
  signalGroup(child, 'SIGKILL');
}

export async function stopAllChildren(): Promise<void> {
  await Promise.all([...live].map((child) => stopChild(child)));
}

/** Last resort from an 'exit' handler, where nothing asynchronous runs any more. */
export function killAllChildrenNow(): void {
  for (const child of live) signalGroup(child, 'SIGKILL');
}

function signalGroup(child: Child, signal: NodeJS.Signals): void {
  const pid = child.process.pid;
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is already gone.
  }
}

/** A loopback port nobody listens on right now (the OS's choice, released before returning). */
export async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (typeof address !== 'object' || address === null) throw new Error('no port from the OS');
  return address.port;
}

/**
 * Waits until an SMTP server on the port sends its 220 greeting (then says QUIT), polling every
 * 50 ms; fails when `child` exits first or `timeoutMs` passes.
 */
export async function waitForGreeting(port: number, child: Child, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exited) throw new Error(`${child.name} exited (${JSON.stringify(child.exited)}) before it listened: ${child.stderr().trim()}`);
    if (await greets(port)) return;
    if (Date.now() > deadline) throw new Error(`${child.name} did not greet on 127.0.0.1:${port} within ${timeoutMs} ms: ${child.stderr().trim()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function greets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2_000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('data', (chunk: Buffer) => {
      if (!chunk.toString().startsWith('220')) return done(false);
      socket.end('QUIT\r\n', () => done(true));
    });
  });
}

/** Waits for a line of the child's stdout that `pick` accepts, bounded by `timeoutMs`. */
export async function waitForStdout<T>(child: Child, pick: (line: string) => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const line of child.stdout().split('\n')) {
      const picked = pick(line);
      if (picked !== undefined) return picked;
    }
    if (child.exited) throw new Error(`${child.name} exited (${JSON.stringify(child.exited)}): ${child.stderr().trim()}`);
    if (Date.now() > deadline) throw new Error(`${child.name} printed nothing usable within ${timeoutMs} ms: ${child.stderr().trim()}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export interface SourceRun {
  elapsedMs: number;
  exitCode: number | null;
  timedOut: boolean;
  /** smtp-source is silent on success (no -c): anything here is a complaint. */
  stderr: string;
}

/** One smtp-source run to completion, killed (and reported as timed out) after `timeoutMs`. */
export async function runSmtpSource(args: string[], timeoutMs: number): Promise<SourceRun> {
  const startedMs = performance.now();
  const child = startChild('smtp-source', '/usr/sbin/smtp-source', args);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    void stopChild(child, 1_000);
  }, timeoutMs);
  // 'close', not 'exit': the pipes are drained by then, so no complaint on stderr is missed.
  const [code] = (await once(child.process, 'close')) as [number | null];
  const elapsedMs = performance.now() - startedMs;
  clearTimeout(timer);
  return { elapsedMs, exitCode: code, timedOut, stderr: (child.stderr() + child.stdout()).trim() };
}
