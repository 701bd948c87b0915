// check-upstream's probe against a Postfix stand-in that stalls or drops at each step: every step ends within
// its time-out with a FAIL naming the step, and the check ends within a bound (no step waits forever).
import { afterEach, describe, expect, it } from 'vitest';
import { probeUpstream, type Finding } from '../../src/upstream/probe.js';
import { FakeUpstream, type UpstreamStep } from '../support/fake-upstream.js';

const REPLY_TIMEOUT_MS = 300;

describe('check-upstream probe time-outs', () => {
  let upstream: FakeUpstream | undefined;
  afterEach(async () => {
    await upstream?.close();
    upstream = undefined;
  });

  function probe(fake: FakeUpstream): Promise<Finding[]> {
    return probeUpstream({
      upstream: {
        host: '127.0.0.1', port: fake.port, heloName: 'probe.test', xclient: 'required',
        connectTimeoutMs: REPLY_TIMEOUT_MS, replyTimeoutMs: REPLY_TIMEOUT_MS, dataStallTimeoutMs: REPLY_TIMEOUT_MS, dataDoneTimeoutMs: REPLY_TIMEOUT_MS,
      },
      maxMessageBytes: 10_240_000,
      recipients: ['alice@example.test'],
    });
  }

  const steps: UpstreamStep[] = ['greeting', 'ehlo', 'xclient', 'mail', 'rcpt'];
  for (const step of steps) {
    it(`fails, naming the step, when the upstream stalls at ${step}`, async () => {
      upstream = await FakeUpstream.start({ xclient: true, stallAt: step });
      const started = performance.now();
      const findings = await probe(upstream);
      // Two connections, each cut at its first stalled step.
      expect(performance.now() - started).toBeLessThan(REPLY_TIMEOUT_MS * 2 + 2_000);
      const failure = findings.find((finding) => finding.level === 'FAIL' && finding.text.includes(`no reply within ${REPLY_TIMEOUT_MS} ms`));
      expect(failure, JSON.stringify(findings, null, 2)).toBeDefined();
      expect(failure?.text).toContain(`${step}:`);
    });
  }

  it('fails when the upstream drops the connection after its greeting', async () => {
    upstream = await FakeUpstream.start({ xclient: true, dropAt: 'ehlo' });
    const findings = await probe(upstream);
    expect(findings.some((finding) => finding.level === 'FAIL' && /closed/.test(finding.text)), JSON.stringify(findings, null, 2)).toBe(true);
  });
});
