// The admin port cannot take the SMTP listener down: connections beyond admin.maxConnections are closed
// as they arrive, silent ones after 5 s, one that trickles its headers within headersTimeout plus the
// one-second check, and all the while SMTP clients are greeted.
import net from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

const CAP = 5;
let upstream: FakeUpstream;
let proxy: TestProxy;

beforeAll(async () => {
  upstream = await FakeUpstream.start();
  proxy = await startTestProxy(upstream.address, `admin:\n  maxConnections: ${CAP}\n`);
});

afterAll(async () => {
  await proxy?.stop();
  await upstream?.close();
});

interface Idle {
  socket: net.Socket;
  /** Resolves with ms from connect to close (the client sends nothing). */
  closedAfterMs: Promise<number>;
}

async function idleConnection(port: number): Promise<Idle> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const connectedAt = Date.now();
  // Not once(): it would reject on the EPIPE of a write racing the server's close.
  return { socket, closedAfterMs: new Promise((resolve) => socket.once('close', () => resolve(Date.now() - connectedAt))) };
}

function greeting(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setTimeout(3_000, () => reject(new Error('no greeting within 3 s')));
    socket.once('data', (data) => {
      socket.end('QUIT\r\n');
      resolve(data.toString('latin1'));
    });
    socket.on('error', reject);
  });
}

function raced(closed: Promise<number>, withinMs: number): Promise<number | 'open'> {
  return Promise.race([closed, new Promise<'open'>((resolve) => setTimeout(() => resolve('open'), withinMs))]);
}

describe('admin connections', () => {
  it('closes connections beyond the cap at once, keeps greeting SMTP clients, and drops silent ones after 5 s and trickling ones by headersTimeout', async () => {
    const adminPort = proxy.proxy.adminAddress.port;
    const held = [];
    for (let index = 0; index < CAP - 1; index += 1) held.push(await idleConnection(adminPort));
    // One byte of a request a second: never idle, so only headersTimeout, checked every second, ends it.
    const trickle = await idleConnection(adminPort);
    const request = 'GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ' + 'x'.repeat(20);
    let sent = 0;
    const dripping = setInterval(() => (sent < request.length && trickle.socket.writable ? trickle.socket.write(request[sent++]!) : undefined), 1_000);
    held.push(trickle);
    const extra = await Promise.all(Array.from({ length: 10 }, () => idleConnection(adminPort)));
    // Each extra connection is closed by the server without a byte, well before any timeout.
    const extraClosed = await Promise.all(extra.map((connection) => raced(connection.closedAfterMs, 1_000)));
    expect(extraClosed.every((closedAfter) => closedAfter !== 'open')).toBe(true);
    expect((await Promise.all(held.map((connection) => raced(connection.closedAfterMs, 0)))).every((state) => state === 'open')).toBe(true);

    expect(await greeting(proxy.port)).toMatch(/^220 /);

    // Silent ones: the 5 s inactivity timeout. The trickling one: headersTimeout (5 s from its first byte,
    // 1 s in) found by the one-second check, not by Node's default 30 s sweep.
    const heldClosed = await Promise.all(held.map((connection) => raced(connection.closedAfterMs, 10_000)));
    expect(heldClosed.slice(0, -1).every((closedAfter) => typeof closedAfter === 'number' && closedAfter >= 4_500 && closedAfter < 6_500), String(heldClosed)).toBe(true);
    const trickleClosedAfter = heldClosed.at(-1);
    expect(typeof trickleClosedAfter === 'number' && trickleClosedAfter >= 5_500 && trickleClosedAfter < 9_000, String(trickleClosedAfter)).toBe(true);
    clearInterval(dripping);
    const answer = await fetch(`http://127.0.0.1:${adminPort}/healthz`);
    expect(answer.status).toBe(200);
  }, 20_000);
});
