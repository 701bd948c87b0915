// Throwaway Postfix for end-to-end tests and benchmarks: one private instance per startPostfix(),
// with its own config, queue, data and maildirs under a fresh /tmp directory, one smtpd on
// 127.0.0.1:<port>, virtual maildir delivery for a few users, and XCLIENT allowed from loopback so
// the proxy can hand over the real client. With { postscreen: true } that port is postscreen(8) in
// front of smtpd instead, postscreen's defaults untouched. Needs the Debian postfix package and root.
import { mkdtemp, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  defaultDomain,
  findPostfixTool,
  layoutFor,
  mailboxAddress,
  postfixIds,
  prepareDirectories,
  writeConfig,
  type Layout,
  type PostfixOptions,
} from './postfix-config.js';
import {
  fileSize,
  freeLoopbackPort,
  portIsFree,
  readFrom,
  runMaster,
  sleep,
  teardown,
  type RunningMaster,
} from './postfix-process.js';

export { findPostfixTool, type PostfixOptions } from './postfix-config.js';
export { liveGroupMembers } from './postfix-process.js';

export interface StartPostfixOptions extends PostfixOptions {
  /**
   * The inet listener is postscreen(8) (maxproc 1) handing clients to an smtpd "pass" service, with
   * dnsblog and tlsproxy beside it, as in the stock master.cf with postscreen enabled. No postscreen_*
   * setting is changed: clients in mynetworks are allowlisted, others take the pregreet test.
   */
  postscreen?: boolean;
}

export interface PostfixInstance {
  port: number;
  host: string;
  domain: string;
  /** Root of everything this instance owns; removed by stop(). */
  dir: string;
  configDir: string;
  queueDir: string;
  mailboxDir: string;
  logFile: string;
  /** PID of the master daemon; also the process group of every daemon of this instance. */
  masterPid: number;
  /** Delivered message files (maildir new/ and cur/) for "alice" or "alice@domain", oldest first. */
  mailboxFiles(user: string): Promise<string[]>;
  /** Polls until user has at least count messages; throws with the log tail after timeoutMs. */
  waitForMail(user: string, count: number, timeoutMs: number): Promise<string[]>;
  /** Log written since the instance became ready (startup and readiness probe excluded), or since markLog(). */
  readLog(): Promise<string>;
  /** Polls readLog() until a line matches re; returns that line. Throws with the log tail after timeoutMs. */
  waitForLog(re: RegExp, timeoutMs: number): Promise<string>;
  /** Moves the start of readLog()/waitForLog() to the current end, so later waits see only new lines. */
  markLog(): Promise<void>;
  /** Stops every process of this instance and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

const pollIntervalMs = 50;
const bindAttempts = 3;

/** Why startPostfix() cannot work here, or undefined when it can. For skip messages. */
export function postfixUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return 'the Postfix harness runs on Linux only';
  if (findPostfixTool('postfix') === undefined || findPostfixTool('postconf') === undefined) {
    return 'postfix is not installed (run .ci/install-deps.sh)';
  }
  // master binds, chowns the queue and hands each daemon its own user: only root can do that.
  if (process.getuid?.() !== 0) return 'the Postfix harness must run as root';
  try {
    postfixIds();
  } catch {
    return 'the postfix user is missing (reinstall the postfix package)';
  }
  return undefined;
}

export function postfixAvailable(): boolean {
  return postfixUnavailableReason() === undefined;
}

export async function startPostfix(options: StartPostfixOptions = {}): Promise<PostfixInstance> {
  const reason = postfixUnavailableReason();
  if (reason !== undefined) throw new Error(`cannot start Postfix: ${reason}`);

  const host = '127.0.0.1';
  const deadline = Date.now() + (options.startTimeoutMs ?? 20_000);
  const layout = layoutFor(await mkdtemp('/tmp/smtp-pushback-postfix-'));
  let running: RunningMaster | undefined;
  try {
    const ids = postfixIds();
    await prepareDirectories(layout, ids);
    for (let attempt = 1; running === undefined; attempt++) {
      const port = options.port ?? (await freeLoopbackPort());
      // Postfix listens with SO_REUSEPORT, so a second instance on a taken port does not fail: it
      // silently shares the port. Our plain bind() does fail, which makes it the check we need.
      if (!(await portIsFree(host, port))) throw new Error(`cannot start Postfix: ${host}:${port} is in use`);
      await writeConfig(layout, port, options, ids);
      if (options.postscreen) await usePostscreen(layout, host, port);
      try {
        running = await runMaster(layout, host, port, deadline);
      } catch (error) {
        // A picked port can still be taken between our check and master's bind(); pick another.
        const lostRace = options.port === undefined && /address already in use/i.test(String(error));
        if (!lostRace || attempt >= bindAttempts) throw error;
      }
    }
  } catch (error) {
    await teardown(running, layout.dir);
    throw error;
  }
  return makeInstance(running, layout, host, options.domain ?? defaultDomain);
}

/**
 * Swaps master.cf's smtpd inet line for postscreen, with the services the stock master.cf lists
 * with it. Keeps writeConfig()'s backdating, so master does not wait for the file to settle.
 */
async function usePostscreen(layout: Layout, host: string, port: number): Promise<void> {
  const path = join(layout.configDir, 'master.cf');
  const lines = (await readFile(path, 'utf8')).split('\n');
  const listener = `${host}:${port}`;
  const index = lines.findIndex((line) => line.split(/\s+/)[0] === listener && line.split(/\s+/)[1] === 'inet');
  if (index < 0) throw new Error(`cannot enable postscreen: no ${listener} inet service in ${path}`);
  const services = [
    // service             type        private unpriv chroot wakeup maxproc command
    `${listener}     inet        n       -      n      -      1       postscreen`,
    'smtpd                 pass        -       -      n      -      -       smtpd',
    'dnsblog               unix        -       -      n      -      0       dnsblog',
    'tlsproxy              unix        -       -      n      -      0       tlsproxy',
  ];
  lines.splice(index, 1, ...services);
  const { atime, mtime } = await stat(path);
  await writeFile(path, lines.join('\n'));
  await utimes(path, atime, mtime);
}

function makeInstance(running: RunningMaster, layout: Layout, host: string, domain: string): PostfixInstance {
  let logOffset = running.readyLogOffset;
  let stopped: Promise<void> | undefined;

  const readLog = (): Promise<string> => readFrom(layout.logFile, logOffset);
  const logTail = async (): Promise<string> => (await readFrom(layout.logFile, 0)).slice(-3_000);

  const mailboxFiles = async (user: string): Promise<string[]> => {
    const [local, userDomain] = mailboxAddress(user, domain).split('@') as [string, string];
    const maildir = join(layout.mailboxDir, userDomain, local);
    const files: { path: string; mtimeMs: number }[] = [];
    for (const sub of ['new', 'cur']) {
      let names: string[];
      try {
        names = await readdir(join(maildir, sub));
      } catch {
        continue; // virtual(8) creates the maildir on first delivery.
      }
      for (const name of names) {
        const path = join(maildir, sub, name);
        files.push({ path, mtimeMs: (await stat(path)).mtimeMs });
      }
    }
    return files.sort((a, b) => a.mtimeMs - b.mtimeMs || a.path.localeCompare(b.path)).map((file) => file.path);
  };

  return {
    port: running.port,
    host,
    domain,
    dir: layout.dir,
    configDir: layout.configDir,
    queueDir: layout.queueDir,
    mailboxDir: layout.mailboxDir,
    logFile: layout.logFile,
    masterPid: running.masterPid,
    mailboxFiles,
    async waitForMail(user, count, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const files = await mailboxFiles(user);
        if (files.length >= count) return files;
        if (Date.now() > deadline) {
          throw new Error(`${user}: ${files.length} of ${count} messages after ${timeoutMs} ms\n${await logTail()}`);
        }
        await sleep(pollIntervalMs);
      }
    },
    readLog,
    async waitForLog(re, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      // A global or sticky regex keeps lastIndex between test() calls and would skip lines.
      const lineRe = new RegExp(re.source, re.flags.replace(/[gy]/g, ''));
      for (;;) {
        const line = (await readLog()).split('\n').find((candidate) => lineRe.test(candidate));
        if (line !== undefined) return line;
        if (Date.now() > deadline) throw new Error(`no log line matched ${re} in ${timeoutMs} ms\n${await logTail()}`);
        await sleep(pollIntervalMs);
      }
    },
    async markLog() {
      logOffset = await fileSize(layout.logFile);
    },
    stop() {
      stopped ??= teardown(running, layout.dir);
      return stopped;
    },
  };
}
