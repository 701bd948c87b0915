// A client refused on a verdict hears the same refusal on its next connections for a few seconds without
// a session being built, screened or learned from: in a flood most connections are such. Counted as
// refused sessions all the same. Real listener on an ephemeral port, a scripted upstream.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

let upstream: FakeUpstream;
let proxy: TestProxy | undefined;

beforeEach(async () => {
  upstream = await FakeUpstream.start();
});

afterEach(async () => {
  await proxy?.stop();
  await upstream.close();
  proxy = undefined;
});

async function refusal(port: number, localAddress: string): Promise<{ code: number; closed: boolean }> {
  const dialog = await SmtpDialog.connect(port, { localAddress });
  try {
    const reply = await dialog.reply();
    return { code: reply.code, closed: await dialog.closedByServer() };
  } finally {
    dialog.destroy();
  }
}

describe('refusal at accept', () => {
  it('answers a client refused moments ago before building a session, and counts it refused', async () => {
    proxy = await startTestProxy(upstream.address, 'pushback: { deny: ["127.51.0.1/32"] }\n');
    expect(await refusal(proxy.port, '127.51.0.1')).toEqual({ code: 554, closed: true });
    await proxy.waitForSessions(1);
    for (let index = 0; index < 5; index++) expect(await refusal(proxy.port, '127.51.0.1')).toEqual({ code: 554, closed: true });
    // Only the first built a session; every refusal is counted.
    const metrics = await (await fetch(`http://127.0.0.1:${proxy.proxy.adminAddress.port}/metrics`)).text();
    expect(metrics).toMatch(/^smtp_pushback_sessions_total\{end="refused"\} 6$/m);
    expect(proxy.sessions.filter((record) => record.client === '127.51.0.1')).toHaveLength(1);
    // Another address is screened as usual.
    const other = await SmtpDialog.connect(proxy.port, { localAddress: '127.51.0.2' });
    expect((await other.reply()).code).toBe(220);
    other.destroy();
  });
});
