// Composition root: builds every stage from one policy snapshot and wires them together.
// Nothing else creates long-lived objects; tests start the proxy through startProxy() too.
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Policy } from './config/schema.js';
import type { SessionRecord } from './session/record.js';
import { SmtpListener } from './smtp/listener.js';

export interface RunningProxy {
  smtpAddress: AddressInfo;
  listener: SmtpListener;
  stop(): Promise<void>;
}

export interface ProxyHooks {
  /** Extra observer of finished sessions (tests, benchmarks). */
  onSessionEnd?: (record: SessionRecord) => void;
}

export async function startProxy(policy: Policy, logger: Logger, hooks: ProxyHooks = {}): Promise<RunningProxy> {
  const listener = new SmtpListener({
    policy,
    logger,
    onSessionEnd: (record) => hooks.onSessionEnd?.(record),
  });
  const smtpAddress = await listener.listen();
  logger.info(
    { listen: `${smtpAddress.address}:${smtpAddress.port}`, upstream: `${policy.upstream.address.host}:${policy.upstream.address.port}` },
    'smtp-pushback listening',
  );
  return {
    smtpAddress,
    listener,
    async stop() {
      await listener.close();
    },
  };
}
