// Running and stopping one private Postfix master: start it in the foreground under us, wait until
// smtpd greets, and tear it down so that no daemon or directory outlives the test process, even
// when that process is killed without running its exit handlers.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { open, rm, stat } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { findPostfixTool, toolDirs, type Layout } from './postfix-config.js';

export interface RunningMaster {
  port: number;
  /** Also the process group of every daemon of this instance (master is a session leader). */
  masterPid: number;
  /** The postfix-script shell that runs master in the foreground; we are its parent, so it is reaped. */
  script: ChildProcess;
  exited: Promise<void>;
  /** Detached shell that tears the instance down if this process dies without stop(). */
  watchdogPid: number | undefined;
  /** Log size once the readiness probe's own session was logged. */
  readyLogOffset: number;
}

const pollIntervalMs = 50;
const stopGraceMs = 5_000;

/**
 * Process-wide safety net: instances not yet stopped, killed synchronously if this process exits
 * without stop(). Test support only; a module-level registry is the one place an "exit" hook can see.
 */
const liveInstances = new Map<number, string>();
let exitHookInstalled = false;

export function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Runs "postfix start-fg": postfix-script's checks (which also create and own the queue
 * directories), then master in the foreground as our grandchild. Unlike "postfix start", nothing
 * daemonizes away from us, so a failed start is an exit we see, and nothing is left for a non-reaping
 * init to collect. Throws with the log (or, if Postfix logged nothing, its own diagnosis).
 */
export async function runMaster(layout: Layout, host: string, port: number, deadline: number): Promise<RunningMaster> {
  const postfix = findPostfixTool('postfix') as string;
  const logStart = await fileSize(layout.logFile);
  const script = spawn(postfix, ['-c', layout.configDir, 'start-fg'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PATH: `${toolDirs.join(':')}:${process.env.PATH ?? ''}` },
  });
  let output = '';
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-4_000);
  };
  script.stdout?.on('data', keep);
  script.stderr?.on('data', keep);
  let exitStatus: string | undefined;
  const exited = new Promise<void>((resolve) => {
    script.once('exit', (code, signal) => {
      exitStatus = signal ?? `exit code ${code}`;
      resolve();
    });
    script.once('error', (error) => {
      exitStatus = error.message;
      resolve();
    });
  });
  const failure = async (what: string): Promise<Error> => {
    const log = (await readFrom(layout.logFile, logStart)).slice(-4_000);
    const detail = log.trim() === '' ? explainSilentFailure(postfix, layout.configDir) : log;
    return new Error(`Postfix in ${layout.dir} ${what}\n--- output ---\n${output}\n--- log ---\n${detail}`);
  };
  const giveUp = async (what: string): Promise<never> => {
    await stopMaster(script, exited, readMasterPid(layout.queueDir));
    throw await failure(what);
  };

  // A full SMTP greeting proves master listens and smtpd starts with this config.
  for (;;) {
    if (exitStatus !== undefined) throw await failure(`exited during start (${exitStatus})`);
    // A daemon that dies on bad config is respawned and dies again; no point waiting for the deadline.
    if (/\bfatal: /.test(await readFrom(layout.logFile, logStart))) await giveUp('logged a fatal error during start');
    if (Date.now() > deadline) await giveUp('did not answer on its SMTP port in time');
    if (await smtpGreets(host, port, Math.max(500, deadline - Date.now()))) break;
    await sleep(pollIntervalMs);
  }
  const masterPid = readMasterPid(layout.queueDir);
  if (masterPid === undefined) return giveUp('answered but wrote no master.pid');
  installExitHook();
  liveInstances.set(masterPid, layout.dir);
  const watchdogPid = startWatchdog(masterPid, layout);

  // Tests should not see the probe session: their view of the log starts after its disconnect line.
  const probeDone = /disconnect from \S*\[127\.0\.0\.1\]/;
  while (!probeDone.test(await readFrom(layout.logFile, logStart)) && Date.now() < deadline) {
    await sleep(pollIntervalMs);
  }
  return { port, masterPid, script, exited, watchdogPid, readyLogOffset: await fileSize(layout.logFile) };
}

/** Stops every process of the instance (if it got that far) and removes its directory. Never throws. */
export async function teardown(running: RunningMaster | undefined, dir: string): Promise<void> {
  if (running !== undefined) {
    if (running.watchdogPid !== undefined) {
      // Its whole group, so the "sleep 1" it may be waiting on goes too.
      signalGroup(running.watchdogPid, 'SIGKILL');
    }
    await stopMaster(running.script, running.exited, running.masterPid);
    liveInstances.delete(running.masterPid);
  }
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Live (not zombie) processes in a process group, from /proc. */
export function liveGroupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after "(comm)": state ppid pgrp ...; comm may hold spaces, so split after the last ")".
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z') members.push(Number(entry));
    } catch {
      // Exited while we looked.
    }
  }
  return members;
}

export async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/** The file from a byte offset on; empty when it is missing or no longer than offset. */
export async function readFrom(path: string, offset: number): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return '';
  }
  try {
    const size = (await handle.stat()).size;
    if (size <= offset) return '';
    const buffer = Buffer.alloc(size - offset);
    await handle.read(buffer, 0, buffer.length, offset);
    return buffer.toString('utf8');
  } finally {
    await handle.close();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const [masterPid, dir] of liveInstances) {
      signalGroup(masterPid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

/**
 * master runs in its own session, so nothing kills it when a test worker is SIGKILLed or torn down
 * without "exit" handlers. A detached shell checks for our pid once a second and, once we are gone,
 * stops that master (if its pid file still names it) and removes the directory.
 */
function startWatchdog(masterPid: number, layout: Layout): number | undefined {
  const pidFile = join(layout.queueDir, 'pid', 'master.pid');
  const script = [
    `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done`,
    `if [ "$(tr -d ' ' < '${pidFile}' 2>/dev/null)" = "${masterPid}" ]; then`,
    `  kill -TERM ${masterPid} 2>/dev/null; sleep 2; kill -KILL -${masterPid} 2>/dev/null`,
    'fi',
    `rm -rf '${layout.dir}'`,
  ].join('\n');
  const watchdog = spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore' });
  watchdog.on('error', () => undefined);
  watchdog.unref();
  return watchdog.pid;
}

/**
 * "postfix stop" semantics: SIGTERM to master, which passes it to its daemons and exits. Whatever is
 * still alive after the grace period is SIGKILLed. Never throws.
 */
async function stopMaster(script: ChildProcess, exited: Promise<void>, masterPid: number | undefined): Promise<void> {
  if (masterPid !== undefined) {
    try {
      process.kill(masterPid, 'SIGTERM');
    } catch {
      // Already gone.
    }
  } else {
    script.kill('SIGTERM');
  }
  const graceEnd = Date.now() + stopGraceMs;
  const scriptDone = await Promise.race([exited.then(() => true), sleep(stopGraceMs).then(() => false)]);
  if (!scriptDone) script.kill('SIGKILL');
  if (masterPid === undefined) return;
  while (liveGroupMembers(masterPid).length > 0 && Date.now() < graceEnd) await sleep(pollIntervalMs);
  if (liveGroupMembers(masterPid).length > 0) signalGroup(masterPid, 'SIGKILL');
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // Already gone.
  }
}

function readMasterPid(queueDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(queueDir, 'pid', 'master.pid'), 'utf8').trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Errors found while parsing main.cf, before logging is set up, go to syslog (absent in CI) or to
 * stderr only when stderr is a terminal. Re-running "postfix check" under script(1) gives it one.
 */
function explainSilentFailure(postfix: string, configDir: string): string {
  const scriptTool = findPostfixTool('script');
  if (scriptTool === undefined) return `(nothing logged; run "${postfix} -c ${configDir} check" on a terminal)`;
  let said: string;
  try {
    said = execFileSync(scriptTool, ['-qec', `${postfix} -c ${configDir} check`, '/dev/null'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 10_000,
    });
  } catch (error) {
    said = (error as { stdout?: string }).stdout ?? String(error);
  }
  return `(nothing logged; "postfix check" says:)\n${said.replace(/\r/g, '')}`;
}

/** Connects, expects 220, says QUIT, expects 221. False on any failure (not listening yet, smtpd broken). */
function smtpGreets(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let received = '';
    let quitSent = false;
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('close', () => done(false));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (!quitSent && /^220 /m.test(received)) {
        quitSent = true;
        socket.write('QUIT\r\n');
      } else if (quitSent && /^221 /m.test(received)) {
        done(true);
      } else if (/^[45]\d\d /m.test(received)) {
        done(false);
      }
    });
  });
}
