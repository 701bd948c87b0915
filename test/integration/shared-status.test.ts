// Two proxy processes sharing one Redis: what one node sees flips the status on the other; a flash
// crowd of complete sessions never looks like an attack; and a Redis that dies and comes back
// leaves relaying untouched while /status says degraded, then not.
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startProxyProcess, type ProxyProcess } from '../support/proxy-process.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { freePort, startRedis, stopRedis, waitForAsync } from '../support/redis-server.js';
import { deleteKeys, TEST_REDIS_URL as REDIS_URL } from '../support/redis-keys.js';
import { abandonedSession, completeSession, inParallel } from '../support/sessions.js';
import { SmtpDialog } from '../support/smtp-dialog.js';



describe('two nodes sharing one Redis', () => {
  const prefix = `pbtest:${process.pid}:${randomBytes(4).toString('hex')}:`;
  let upstream: FakeUpstream;
  let nodeA: ProxyProcess;
  let nodeB: ProxyProcess;

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    const policy = `log: { level: info }\nstate: { keyPrefix: "${prefix}" }\nentropy: { windowSeconds: 10 }\n`;
    const env = { PUSHBACK_REDIS_URL: REDIS_URL, PUSHBACK_UPSTREAM: upstream.address };
    [nodeA, nodeB] = await Promise.all([startProxyProcess(policy, env), startProxyProcess(policy, env)]);
  });

  afterAll(async () => {
    await Promise.all([nodeA?.stop(), nodeB?.stop()]);
    await upstream?.close();
    await deleteKeys(prefix);
  });

  it('abandoned sessions on one node flip the other node to -1; complete sessions bring it back to 1', async () => {
    expect((await nodeB.status()).store).toBe('redis');
    // 60 clients from 60 loopback addresses hear the greeting and leave: 60 abnormal pairs on node A.
    await inParallel(60, 20, (index) => abandonedSession(nodeA.smtpPort, `127.0.1.${index + 1}`));
    await waitForAsync(async () => (await nodeB.status()).status === -1, 10_000, 'node B to see status -1');
    const seenByB = await nodeB.status();
    expect(seenByB.abnormalPairs).toBeGreaterThanOrEqual(60);
    const top = seenByB.topSources as Array<{ source: string; abnormal: number }>;
    expect(top.length).toBeGreaterThan(0);
    expect(top[0]?.source).toMatch(/^127\.0\.1\.\d+$/);

    // Legitimate complete sessions on node B (six normal pairs each) outweigh them on node A.
    const codes = await inParallel(40, 10, () => completeSession(nodeB.smtpPort));
    expect(codes.every((code) => code === 250)).toBe(true);
    await waitForAsync(async () => (await nodeA.status()).status === 1, 10_000, 'node A to see status 1 again');
  });

  it('a verdict found on one node is enforced by the other', async () => {
    // An early talker on node A earns a verdict there; node B meets it at its next connection.
    const dialog = await SmtpDialog.connect(nodeA.smtpPort, { localAddress: '127.0.3.7' });
    dialog.write('EHLO too.early\r\n');
    expect((await dialog.reply()).code).toBe(421);
    dialog.destroy();
    await waitForAsync(async () => {
      const metrics = await (await fetch(`http://127.0.0.1:${nodeA.adminPort}/metrics`)).text();
      return /^smtp_pushback_verdicts_total\{action="tarpit",detector="early-talker"\} 1$/m.test(metrics);
    }, 5_000, 'the verdict on node A');
    const probe = await SmtpDialog.connect(nodeB.smtpPort, { localAddress: '127.0.3.7' });
    await new Promise((resolve) => setTimeout(resolve, 500));
    probe.destroy();
    await waitForAsync(async () => {
      const metrics = await (await fetch(`http://127.0.0.1:${nodeB.adminPort}/metrics`)).text();
      return /^smtp_pushback_actions_total\{action="tarpit",enforced="true"\} 1$/m.test(metrics);
    }, 5_000, 'node B to tarpit the same source');
  });

  it('a flash crowd of complete sessions never leaves status 1', async () => {
    // Let the previous test's pairs leave the window.
    await waitForAsync(async () => (await nodeA.status()).abnormalPairs === 0, 15_000, 'an empty window');
    const seen = new Set<number>();
    let crowdDone = false;
    const watcher = (async () => {
      while (!crowdDone) {
        seen.add((await nodeA.status()).status);
        seen.add((await nodeB.status()).status);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    const codes = await inParallel(300, 60, (index) => completeSession(index % 2 ? nodeA.smtpPort : nodeB.smtpPort, `127.0.2.${(index % 250) + 1}`));
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // one more status tick after the crowd
    crowdDone = true;
    await watcher;
    expect(codes.filter((code) => code !== 250)).toEqual([]);
    expect([...seen]).toEqual([1]);
    expect((await nodeA.status()).normalPairs).toBeGreaterThan(1000);
  });
});

describe('Redis stopped and started again during a run', () => {
  let redis: ChildProcess | undefined;
  let upstream: FakeUpstream;
  let proxy: TestProxy;

  afterAll(async () => {
    await proxy?.stop();
    await upstream?.close();
    await stopRedis(redis);
  });

  it('keeps relaying, reports degraded while Redis is down and recovers by itself', async () => {
    const port = await freePort();
    redis = await startRedis(port);
    upstream = await FakeUpstream.start();
    proxy = await startTestProxy(upstream.address, 'entropy: { statusIntervalMs: 200 }\nstate: { flushIntervalMs: 50 }\n', {
      PUSHBACK_REDIS_URL: `redis://127.0.0.1:${port}`,
    });
    expect(proxy.proxy.status()).toMatchObject({ store: 'redis', degraded: false });
    expect(await completeSession(proxy.port)).toBe(250);

    await stopRedis(redis);
    const duringOutage = await inParallel(10, 5, () => completeSession(proxy.port));
    expect(duringOutage.every((code) => code === 250)).toBe(true);
    await waitForAsync(async () => proxy.proxy.status().degraded, 5_000, 'degraded');
    const admin = `http://127.0.0.1:${proxy.proxy.adminAddress.port}`;
    const degraded = (await (await fetch(`${admin}/status`)).json()) as { degraded: boolean; store: string; normalPairs: number };
    expect(degraded).toMatchObject({ degraded: true, store: 'memory' });
    expect(degraded.normalPairs).toBeGreaterThan(0); // this node's own view carries on
    expect(await (await fetch(`${admin}/metrics`)).text()).toMatch(/^smtp_pushback_state_degraded 1$/m);

    redis = await startRedis(port);
    await waitForAsync(async () => !proxy.proxy.status().degraded, 10_000, 'recovery');
    expect(await completeSession(proxy.port)).toBe(250);
    expect(proxy.proxy.status().store).toBe('redis');
    expect(await (await fetch(`${admin}/metrics`)).text()).toMatch(/^smtp_pushback_redis_outages_total [1-9]/m);
  });
});
