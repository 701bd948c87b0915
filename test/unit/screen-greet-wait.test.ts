// The greet wait under stress goes to clients with points against them, not to every newcomer: an
// idle flood never talks, and a first-time correspondent with a clean record should not wait
// `greetWaitMs.danger` because others flood (test/integration/session-limits.test.ts checks the
// 100 ms early-talker wait every untrusted client keeps).
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/config/load.js';
import type { ServerStatus } from '../../src/detect/entropy.js';
import { Screen } from '../../src/policy/screen.js';
import { MemoryKv } from '../../src/state/memory-kv.js';

function screenAt(status: ServerStatus, yaml = ''): Screen {
  const parsed = parsePolicyText(yaml, 'greet.yaml', {});
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  const policy = parsed.policy;
  return new Screen({
    policy: () => policy,
    kv: new MemoryKv(),
    status: () => status,
    // 192.0.2.0/24 holds suspects; nothing else does.
    prefixes: {
      suspectPrefix: (address: string) => (address.startsWith('192.0.2.') ? { prefix: '192.0.2.0/24', family: 'ipv4', lengthBits: 24, members: 5 } : undefined),
      addSuspect: () => undefined,
    },
    sfds: () => undefined,
    logger: pino({ level: 'silent' }),
    metrics: { verdict: () => undefined, decision: () => undefined, kvError: () => undefined },
    quarantineAvailable: () => true,
  });
}

describe('greet wait by evidence', () => {
  it('holds a client inside a suspect prefix for the danger wait while the status is -1', async () => {
    const decision = await screenAt(-1).atConnect({ address: '192.0.2.9', port: 1 });
    expect(decision.greetDelayMs).toBeGreaterThanOrEqual(2_000);
  });

  it('holds a first-time client with a clean record no longer under a flood than on a calm day', async () => {
    expect((await screenAt(-1).atConnect({ address: '198.51.100.7', port: 1 })).greetDelayMs).toBe(0);
    expect((await screenAt(0).atConnect({ address: '198.51.100.7', port: 1 })).greetDelayMs).toBe(0);
  });

  it('gives every client not trusted the safe wait an operator sets, whatever its record', async () => {
    const screen = screenAt(-1, 'pushback: { greetWaitMs: { safe: 300 } }\n');
    expect((await screen.atConnect({ address: '198.51.100.7', port: 1 })).greetDelayMs).toBe(300);
    expect((await screen.atConnect({ address: '192.0.2.9', port: 1 })).greetDelayMs).toBeGreaterThanOrEqual(2_000);
  });
});
