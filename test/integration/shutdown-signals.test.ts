// Signals of the real proxy process: SIGTERM drains (new clients get 421 at once, a message being
// sent completes, what is left after the deadline gets 421, the process exits 0), a second SIGTERM
// cuts the drain short, and SIGHUP reloads the policy.
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpstream, type FakeUpstreamOptions } from '../support/fake-upstream.js';
import { startProxyProcess, type ProxyProcess } from '../support/proxy-process.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

let proxy: ProxyProcess | undefined;
let upstream: FakeUpstream | undefined;
const dialogs: SmtpDialog[] = [];

afterEach(async () => {
  for (const dialog of dialogs.splice(0)) dialog.destroy();
  await proxy?.stop();
  await upstream?.close();
  proxy = undefined;
  upstream = undefined;
});

async function start(policyYaml: string, upstreamOptions: FakeUpstreamOptions = {}): Promise<ProxyProcess> {
  upstream = await FakeUpstream.start(upstreamOptions);
  proxy = await startProxyProcess(`log: { level: info }\n${policyYaml}`, { PUSHBACK_UPSTREAM: upstream.address });
  return proxy;
}

async function connect(port: number): Promise<SmtpDialog> {
  const dialog = await SmtpDialog.connect(port);
  dialogs.push(dialog);
  return dialog;
}

/** A session that has sent the first part of a message after DATA's 354. */
async function midData(port: number): Promise<SmtpDialog> {
  const dialog = await connect(port);
  expect((await dialog.reply()).code).toBe(220);
  expect((await dialog.command('EHLO client.example')).code).toBe(250);
  expect((await dialog.command('MAIL FROM:<a@example.org>')).code).toBe(250);
  expect((await dialog.command('RCPT TO:<b@example.net>')).code).toBe(250);
  expect((await dialog.command('DATA')).code).toBe(354);
  dialog.write('Subject: drain\r\n\r\nfirst half\r\n');
  return dialog;
}

function logRecords(node: ProxyProcess): Array<Record<string, unknown>> {
  return node.logLines.map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function waitFor(probe: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The first log record whose msg matches; waits for it, bounded. */
async function logLine(node: ProxyProcess, message: RegExp): Promise<Record<string, unknown>> {
  const find = (): Record<string, unknown> | undefined => logRecords(node).find((record) => message.test(String(record.msg)));
  await waitFor(() => find() !== undefined, `a log line ${message}`);
  return find()!;
}

/** The exit code (or signal), bounded: a process that does not exit fails the test. */
async function exitOf(child: ChildProcess, timeoutMs: number): Promise<number | string> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode ?? String(child.signalCode);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`process still running after ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? String(signal));
    });
  });
}

async function readyz(node: ProxyProcess): Promise<number> {
  return (await fetch(`http://127.0.0.1:${node.adminPort}/readyz`, { signal: AbortSignal.timeout(3_000) })).status;
}

const SHUTTING_DOWN = /^4\.3\.2 \S+ Service shutting down, try again later$/;

describe('SIGTERM drain', () => {
  it('refuses new clients with 421, lets a message being sent complete, then exits 0', async () => {
    const node = await start('server: { shutdownDrainSeconds: 60 }\n');
    expect(await readyz(node)).toBe(200);
    const sending = await midData(node.smtpPort);
    const idle = await connect(node.smtpPort);
    expect((await idle.reply()).code).toBe(220);

    node.child.kill('SIGTERM');
    const started = await logLine(node, /^draining/);
    expect(started).toMatchObject({ reason: 'SIGTERM', sessions: 2, drainSeconds: 60 });
    expect(await readyz(node)).toBe(503);

    // A new client hears 421 (the listening socket is still open) and is closed.
    const late = await connect(node.smtpPort);
    const refusal = await late.reply();
    expect(refusal.code).toBe(421);
    expect(refusal.text).toMatch(SHUTTING_DOWN);
    expect(await late.closedByServer()).toBe(true);

    // The message under way completes and is relayed; a new transaction after it is deferred.
    sending.write('second half\r\n.\r\n');
    const queued = await sending.reply();
    expect(queued.code).toBe(250);
    expect(queued.text).toMatch(/queued as FAKE1/);
    expect(upstream!.messages.map((message) => message.body.toString())).toEqual(['Subject: drain\r\n\r\nfirst half\r\nsecond half\r\n']);
    const next = await sending.command('MAIL FROM:<a@example.org>');
    expect(next.code).toBe(421);
    expect(next.text).toMatch(SHUTTING_DOWN);
    expect(await sending.closedByServer()).toBe(true);

    // The idle session may still say goodbye; once it has, nothing is left and the process exits.
    expect((await idle.command('QUIT')).code).toBe(221);
    expect(await exitOf(node.child, 20_000)).toBe(0);
    expect(await logLine(node, /^drained and stopped/)).toMatchObject({ reason: 'SIGTERM', end: 'idle' });
    const ends = logRecords(node).filter((record) => record.msg === 'session').map((record) => record.end).sort();
    expect(ends).toEqual(['quit', 'server-shutdown', 'server-shutdown']);
  });

  it('closes a session still open at the deadline with 421 and exits 0', async () => {
    const node = await start('server: { shutdownDrainSeconds: 1 }\n');
    const idle = await connect(node.smtpPort);
    expect((await idle.reply()).code).toBe(220);
    expect((await idle.command('EHLO client.example')).code).toBe(250);

    node.child.kill('SIGTERM');
    const closing = await idle.reply(10_000);
    expect(closing.code).toBe(421);
    expect(closing.text).toMatch(SHUTTING_DOWN);
    expect(await idle.closedByServer()).toBe(true);
    expect(await exitOf(node.child, 20_000)).toBe(0);
    expect(await logLine(node, /^closing the sessions left/)).toMatchObject({ end: 'deadline', sessionsLeft: 1 });
    expect(await logLine(node, /^drained and stopped/)).toMatchObject({ end: 'deadline' });
  });

  it('at the deadline, a message already with Postfix gets its final reply before the 421', async () => {
    // Postfix never answers the final dot: the proxy's own time-out (451) is that final reply.
    const node = await start('server: { shutdownDrainSeconds: 1 }\nupstream: { dataDoneTimeoutMs: 3000 }\n', { stallAt: 'dot' });
    const sending = await midData(node.smtpPort);
    sending.write('.\r\n');
    await waitFor(() => upstream!.dataEnded === 1, 'the final dot at the upstream');

    node.child.kill('SIGTERM');
    await logLine(node, /^closing the sessions left/);
    const final = await sending.reply(10_000);
    expect(final.code).toBe(451);
    const closing = await sending.reply(5_000);
    expect(closing.code).toBe(421);
    expect(closing.text).toMatch(SHUTTING_DOWN);
    expect(await exitOf(node.child, 20_000)).toBe(0);
  });

  it('a second SIGTERM closes every session at once, mid-message included, and exits 0', async () => {
    const node = await start('server: { shutdownDrainSeconds: 600 }\n');
    const sending = await midData(node.smtpPort);
    node.child.kill('SIGTERM');
    await logLine(node, /^draining/);
    node.child.kill('SIGTERM');
    const closing = await sending.reply(10_000);
    expect(closing.code).toBe(421);
    expect(await sending.closedByServer()).toBe(true);
    expect(await exitOf(node.child, 20_000)).toBe(0);
    expect(await logLine(node, /^second shutdown request/)).toMatchObject({ sessionsLeft: 1 });
    expect(await logLine(node, /^drained and stopped/)).toMatchObject({ end: 'cut-short' });
    // The half-sent message never reached Postfix as a message.
    await upstream!.waitForIdle();
    expect(upstream!.messages).toEqual([]);
  });
});

describe('SIGHUP', () => {
  it('reloads the policy file in the running process, which keeps running', async () => {
    const node = await start('mode: enforce\n');
    writeFileSync(node.policyFile, 'log: { level: info }\nmode: observe\n');
    // The file watcher may reload first; SIGHUP must reload too, by itself.
    node.child.kill('SIGHUP');
    await waitFor(() => logRecords(node).some((record) => record.msg === 'policy reloaded' && record.reason === 'SIGHUP'), 'a reload by SIGHUP');
    const status = await node.status();
    expect(status.mode).toBe('observe');
    expect(node.child.exitCode).toBeNull();
    expect(await readyz(node)).toBe(200);
  });
});
