// Starts the real proxy in-process on an ephemeral port, with a policy given as YAML text, and
// collects its session records, so tests assert on what an operator would read in the log.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePolicyText } from '../../src/config/load.js';
import type { Policy } from '../../src/config/schema.js';
import type { Logger } from 'pino';
import { createLogger } from '../../src/log.js';
import { startProxy, type RunningProxy } from '../../src/main.js';
import type { SessionRecord } from '../../src/session/record.js';

export interface TestProxy {
  port: number;
  policy: Policy;
  proxy: RunningProxy;
  sessions: SessionRecord[];
  /** Waits until `count` sessions have ended, bounded. */
  waitForSessions(count: number, timeoutMs?: number): Promise<SessionRecord[]>;
  stop(): Promise<void>;
}

/** `logger`: where the proxy logs (default: silent, or PUSHBACK_TEST_LOG's level on stdout). */
export async function startTestProxy(upstreamAddress: string, yaml = '', env: NodeJS.ProcessEnv = {}, logger?: Logger): Promise<TestProxy> {
  const result = parsePolicyText(yaml, 'test-policy.yaml', {
    PUSHBACK_LISTEN: '127.0.0.1:0',
    PUSHBACK_ADMIN: '127.0.0.1:0',
    // A spool of its own per proxy: the spool is locked to one process.
    PUSHBACK_SPOOL_DIR: mkdtempSync(join(tmpdir(), 'pushback-spool-')),
    PUSHBACK_UPSTREAM: upstreamAddress,
    ...env,
  });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  const sessions: SessionRecord[] = [];
  const proxy = await startProxy(result.policy, logger ?? createLogger(process.env.PUSHBACK_TEST_LOG ?? 'silent'), { onSessionEnd: (record) => sessions.push(record) });
  return {
    port: proxy.smtpAddress.port,
    policy: result.policy,
    proxy,
    sessions,
    async waitForSessions(count, timeoutMs = 5_000) {
      const deadline = Date.now() + timeoutMs;
      while (sessions.length < count && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      return sessions;
    },
    stop: () => proxy.stop(),
  };
}
