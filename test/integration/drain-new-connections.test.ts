// New connections during the shutdown drain: a client that never closes its end still hears the 421,
// then our side closes the connection at once; it is not counted among the sessions the drain waits
// for or reports (sessionsLeft), and the drain ends when the sessions open at the signal have ended.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { waitForAsync } from '../support/redis-server.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

let upstream: FakeUpstream | undefined;
let proxy: TestProxy | undefined;

afterEach(async () => {
  await proxy?.stop();
  await upstream?.close();
  proxy = undefined;
  upstream = undefined;
});

/** A client that keeps its end open after the server's FIN (allowHalfOpen): what it read, and when the server closed. */
function stubbornClient(port: number): Promise<{ received: () => string; serverClosed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    let received = '';
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
    });
    socket.on('error', () => undefined);
    // With allowHalfOpen the client sees the FIN ('end') and keeps its end open: only a write tells
    // whether the server still holds the connection (a socket destroyed on our side answers with RST).
    const serverClosed = new Promise<void>((closed) => socket.once('close', () => closed()));
    socket.once('end', () => {
      const poke = setInterval(() => socket.write('NOOP\r\n'), 100);
      socket.once('close', () => clearInterval(poke));
    });
    socket.once('connect', () => resolve({ received: () => received, serverClosed }));
    socket.once('error', reject);
  });
}

describe('new connections during the drain', () => {
  it('get 421, are closed on our side at once, and are not counted as sessions left', async () => {
    upstream = await FakeUpstream.start();
    const test = await startTestProxy(upstream.address, 'server:\n  shutdownDrainSeconds: 30\n');
    proxy = test;
    const open = await SmtpDialog.connect(test.port);
    expect((await open.reply()).code).toBe(220);
    const drained = test.proxy.shutdown('test');
    await waitForAsync(async () => test.proxy.listener.draining, 2_000, 'the drain to start');

    const client = await stubbornClient(test.port);
    await waitForAsync(async () => /\r\n$/.test(client.received()), 5_000, 'the 421');
    expect(client.received()).toMatch(/^421 4\.3\.2 \S+ Service shutting down, try again later\r\n$/);
    // One session open at the signal; the refused connection is none, even before its close is seen.
    expect(test.proxy.listener.activeSessions).toBe(1);
    // smtp-server alone would hold the refused socket for 5 s after its FIN.
    let closedWithinBound = false;
    await Promise.race([client.serverClosed.then(() => { closedWithinBound = true; }), new Promise((resolve) => setTimeout(resolve, 3_000))]);
    expect(closedWithinBound).toBe(true);
    await waitForAsync(async () => test.sessions.some((record) => record.end === 'server-shutdown'), 2_000, 'the refused connection\'s record');

    open.destroy();
    await drained;
    proxy = undefined;
  });
});
