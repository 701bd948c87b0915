// A start that fails halfway (here: the admin port is taken) stops what had started: the SMTP port is
// free again and the spool unlocked, so the same policy starts once the admin port is free.
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { freePort } from '../support/redis-server.js';
import { completeSession } from '../support/sessions.js';

let upstream: FakeUpstream | undefined;
let proxy: TestProxy | undefined;
let blocker: net.Server | undefined;

afterEach(async () => {
  await proxy?.stop();
  await upstream?.close();
  await new Promise<void>((resolve) => (blocker ? blocker.close(() => resolve()) : resolve()));
  proxy = upstream = blocker = undefined;
});

describe('a failed start', () => {
  it('releases the SMTP port and the spool, so the same start works once the admin port is free', async () => {
    upstream = await FakeUpstream.start();
    const smtpPort = await freePort();
    blocker = net.createServer();
    await new Promise<void>((resolve) => blocker!.listen(0, '127.0.0.1', resolve));
    const adminPort = (blocker.address() as net.AddressInfo).port;
    const env = { PUSHBACK_LISTEN: `127.0.0.1:${smtpPort}`, PUSHBACK_ADMIN: `127.0.0.1:${adminPort}`, PUSHBACK_SPOOL_DIR: mkdtempSync(join(tmpdir(), 'pushback-spool-')) };
    await expect(startTestProxy(upstream.address, '', env)).rejects.toThrow(/EADDRINUSE/);
    await new Promise<void>((resolve) => blocker!.close(() => resolve()));
    blocker = undefined;
    proxy = await startTestProxy(upstream.address, '', env);
    expect(proxy.port).toBe(smtpPort);
    expect(await completeSession(proxy.port)).toBe(250);
  });
});
