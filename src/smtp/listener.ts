// The SMTP listener: the only module that touches smtp-server (as ZoneMTA's smtp-interface.js).
// It accepts clients, follows every command and reply of each session, hands MAIL/RCPT/DATA to
// the relay stage, enforces the session deadline, and at the end of each session emits one
// SessionRecord. smtp-server has hooks only for connect/MAIL/RCPT/DATA/close, so commands and
// replies are observed through its logger interface, which reports every one of them with the
// session id (tnx "command" and "send"); the end of a message is seen in onData.
// test/integration/pairs.test.ts pins that.
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { Logger } from 'pino';
import type { Policy } from '../config/schema.js';
import { SessionRelay, type CommandParameters, type RelayNotices, type RelayReply } from '../relay/session-relay.js';
import { dataOutcome, sessionOutcome, type SessionEnd, type SessionRecord, type TransactionRecord } from '../session/record.js';
import type { UpstreamOptions } from '../upstream/connection.js';
import { PairTracker } from './pair-tracker.js';

/** The part of smtp-server's connection object we use: its id, addresses, and the reply channel. */
interface SmtpConnectionHandle {
  id: string;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  send(code: number, text: string, context?: unknown): void;
  close(): void;
}

interface LiveSession {
  id: string;
  connection: SmtpConnectionHandle;
  startedAtMs: number;
  pairs: PairTracker;
  relay: SessionRelay;
  transactions: TransactionRecord[];
  current: TransactionRecord | undefined;
  commands: number;
  lastCommand: string;
  greeted: boolean;
  end: SessionEnd | undefined;
  /** Set while we refuse the session at connect, so that reply is not counted as a pair. */
  refusing: boolean;
  deadline: NodeJS.Timeout;
  helo?: string;
  clientName?: string;
}

/** The accounting stage: told of every pair and command as it happens and of each session at its end. */
export interface SessionObserver {
  /** A pair closed: normal ones as they happen, the abnormal one when the session ends. */
  pair(source: string, kind: 'normal' | 'abnormal'): void;
  command(): void;
  upstreamLatency(step: string, milliseconds: number): void;
  sessionEnded(record: SessionRecord): void;
}

export interface ListenerDependencies {
  policy: Policy;
  logger: Logger;
  observer: SessionObserver;
  /** Asked at each new connection; a reply refuses the session with it (e.g. shared state down, fail closed). */
  admission?: () => RelayReply | undefined;
}

export class SmtpListener {
  private readonly server: SMTPServer;
  private readonly sessions = new Map<string, LiveSession>();
  private readonly upstreamOptions: UpstreamOptions;
  private readonly relayNotices: RelayNotices;

  constructor(private readonly deps: ListenerDependencies) {
    const { policy } = deps;
    this.upstreamOptions = {
      host: policy.upstream.address.host,
      port: policy.upstream.address.port,
      heloName: policy.upstream.heloName ?? policy.server.hostname,
      xclient: policy.upstream.xclient,
      connectTimeoutMs: policy.upstream.connectTimeoutMs,
      replyTimeoutMs: policy.upstream.replyTimeoutMs,
      dataStallTimeoutMs: policy.upstream.dataStallTimeoutMs,
      dataDoneTimeoutMs: policy.upstream.dataDoneTimeoutMs,
      observeReply: (step, milliseconds) => deps.observer.upstreamLatency(step, milliseconds),
    };
    this.relayNotices = onceNotices(deps.logger);
    this.server = new SMTPServer(this.serverOptions(policy));
    // Sessions are registered when smtp-server creates the connection (after any PROXY header),
    // before its greeting delay, so early talkers and clients over maxClients are seen too.
    this.server.connections = new ConnectionSet((connection) => this.sessionStarted(connection as unknown as SmtpConnectionHandle)) as unknown as typeof this.server.connections;
    this.server.on('error', (error: Error) => deps.logger.debug({ err: error }, 'smtp connection error'));
  }

  listen(): Promise<AddressInfo> {
    const { host, port } = this.deps.policy.server.listen;
    return new Promise((resolve, reject) => {
      const netServer = this.server.server;
      const onError = (error: Error): void => reject(error);
      netServer.once('error', onError);
      this.server.listen(port, host, () => {
        netServer.off('error', onError);
        resolve(netServer.address() as AddressInfo);
      });
    });
  }

  /** Stops accepting; open sessions get smtp-server's 421 after its close timeout. */
  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  get activeSessions(): number {
    return this.sessions.size;
  }

  private serverOptions(policy: Policy): SMTPServerOptions {
    const tls = policy.server.tls;
    const options: SMTPServerOptions = {
      name: policy.server.hostname,
      banner: policy.server.banner,
      heloResponse: '%s',
      size: policy.limits.maxMessageBytes,
      maxRecipients: policy.limits.maxRecipients,
      maxClients: policy.server.maxClients,
      maxCommandLength: policy.limits.maxLineBytes,
      socketTimeout: policy.limits.idleTimeoutSeconds * 1000,
      closeTimeout: 10_000,
      disableReverseLookup: !policy.server.reverseDns,
      useProxy: policy.server.proxyProtocolFrom.length > 0 ? [...policy.server.proxyProtocolFrom] : false,
      useXClient: false,
      useXForward: false,
      authOptional: true,
      disabledCommands: tls ? ['AUTH'] : ['AUTH', 'STARTTLS'],
      hideSTARTTLS: !tls,
      // Postfix's replies carry their own enhanced status codes and we pass them through verbatim.
      hideENHANCEDSTATUSCODES: true,
      logger: this.protocolObserver(),
      onConnect: (session, callback) => this.onConnect(session, callback),
      onMailFrom: (address, session, callback) => this.onMailFrom(address, session, callback),
      onRcptTo: (address, session, callback) => this.onRcptTo(address, session, callback),
      onData: (stream, session, callback) => this.onData(stream, session, callback),
      onClose: (session) => this.sessionEnded(session),
    };
    if (tls) {
      options.key = readFileSync(tls.keyFile);
      options.cert = readFileSync(tls.certFile);
    }
    return options;
  }

  private sessionStarted(connection: SmtpConnectionHandle): void {
    const { policy, logger } = this.deps;
    const live: LiveSession = {
      id: connection.id,
      connection,
      startedAtMs: Date.now(),
      pairs: new PairTracker(),
      relay: new SessionRelay(this.upstreamOptions, this.relayNotices),
      transactions: [],
      current: undefined,
      commands: 0,
      lastCommand: '',
      greeted: false,
      end: undefined,
      refusing: false,
      deadline: setTimeout(() => {
        live.end = 'deadline';
        connection.send(421, `4.4.2 ${policy.server.hostname} Error: session deadline exceeded, closing`, false);
      }, policy.limits.sessionDeadlineSeconds * 1000),
    };
    live.deadline.unref();
    this.sessions.set(connection.id, live);
  }

  private onConnect(session: SMTPServerSession, callback: (error?: Error | null) => void): void {
    const live = this.sessions.get(session.id);
    const refusal = this.deps.admission?.();
    if (!live || !refusal) return callback();
    // smtp-server hangs up right after a refusal at connect: that reply expects no answer.
    live.end = 'refused';
    live.refusing = true;
    callback(smtpError(refusal));
  }

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, callback: (error?: Error | null) => void): void {
    const live = this.sessions.get(session.id);
    if (!live) return callback(smtpError({ code: 421, text: '4.3.0 Session state lost' }));
    live.helo = session.hostNameAppearsAs || undefined;
    if (session.clientHostname && !session.clientHostname.startsWith('[')) live.clientName = session.clientHostname;
    const transaction: TransactionRecord = { from: address.address, rcpt: [], rejected: [], outcome: 'incomplete' };
    live.current = transaction;
    live.transactions.push(transaction);
    const client = {
      address: session.remoteAddress,
      port: session.remotePort,
      hostname: live.clientName,
      helo: live.helo,
      protocol: session.openingCommand === 'HELO' ? 'SMTP' as const : 'ESMTP' as const,
    };
    live.relay.mailFrom(client, address.address, (address.args || {}) as CommandParameters).then((reply) => {
      if (reply.code < 400) return callback();
      transaction.outcome = reply.code < 500 ? 'deferred' : 'rejected';
      transaction.reply = `${reply.code} ${reply.text}`;
      callback(smtpError(reply));
    }, (error: Error) => callback(this.internalError(live, error)));
  }

  private onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, callback: (error?: Error | null) => void): void {
    const live = this.sessions.get(session.id);
    const transaction = live?.current;
    if (!live || !transaction) return callback(smtpError({ code: 503, text: '5.5.1 Error: need MAIL command' }));
    live.relay.rcptTo(address.address, (address.args || {}) as CommandParameters).then((reply) => {
      if (reply.code < 400) {
        transaction.rcpt.push(address.address);
        return callback();
      }
      transaction.rejected.push({ rcpt: address.address, reply: `${reply.code} ${reply.text}` });
      callback(smtpError(reply));
    }, (error: Error) => callback(this.internalError(live, error)));
  }

  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (error?: Error | null, message?: string) => void): void {
    const live = this.sessions.get(session.id);
    const transaction = live?.current;
    if (!live || !transaction) return callback(smtpError({ code: 451, text: '4.3.0 Session state lost' }));
    const started = performance.now();
    const limit = this.deps.policy.limits.maxMessageBytes;
    const abortReason = (): string | undefined => (stream.sizeExceeded ? `message over ${limit} bytes` : undefined);
    live.relay.data(stream, abortReason).then((reply) => {
      // The client answered our 354 only if its message reached the final dot.
      if (stream.readableEnded && live.pairs.clientAnswered()) this.deps.observer.pair(live.connection.remoteAddress, 'normal');
      transaction.bytes = stream.byteLength;
      transaction.dataMs = Math.round(performance.now() - started);
      live.current = undefined;
      if (stream.sizeExceeded) {
        // smtp-server answers 552 itself for an oversized message, whatever we say here.
        transaction.outcome = 'rejected';
        transaction.reply = `552 5.3.4 Error: message exceeds fixed maximum message size ${limit}`;
        return callback(smtpError({ code: 552, text: transaction.reply.slice(4) }));
      }
      transaction.outcome = reply.failure && !stream.readableEnded ? 'aborted' : dataOutcome(reply.code);
      transaction.reply = `${reply.code} ${reply.text}`;
      if (reply.code < 400) return callback(null, reply.text);
      callback(smtpError(reply));
    }, (error: Error) => callback(this.internalError(live, error)));
  }

  private sessionEnded(session: SMTPServerSession): void {
    const live = this.sessions.get(session.id);
    if (!live) return;
    this.sessions.delete(session.id);
    clearTimeout(live.deadline);
    live.relay.close();
    const end = live.end ?? (live.lastCommand === 'QUIT' ? 'quit' : 'dropped');
    const pairs = live.pairs.end();
    if (pairs.abnormal > 0) this.deps.observer.pair(live.connection.remoteAddress, 'abnormal');
    const record: SessionRecord = {
      session: live.id,
      client: live.connection.remoteAddress,
      clientPort: live.connection.remotePort,
      local: live.connection.localAddress,
      localPort: live.connection.localPort,
      transactions: live.transactions,
      outcome: sessionOutcome(live.transactions, end),
      end,
      pairs,
      commands: live.commands,
      durationMs: Date.now() - live.startedAtMs,
    };
    if (live.clientName) record.clientName = live.clientName;
    if (live.helo) record.helo = live.helo;
    if (live.relay.upstreamConnectMs !== undefined) {
      record.upstreamConnectMs = live.relay.upstreamConnectMs;
      record.xclient = live.relay.xclientSent;
    }
    this.deps.logger.info(record, 'session');
    this.deps.observer.sessionEnded(record);
  }

  /** A bug of ours must not leave the client hanging or say 250: 451, logged with the stack. */
  private internalError(live: LiveSession, error: Error): Error {
    this.deps.logger.error({ err: error, session: live.id }, 'internal error in session');
    return smtpError({ code: 451, text: '4.3.0 Internal error, try again later' });
  }

  /**
   * smtp-server's logger interface, used to see every command and reply of every session.
   * Only the protocol events are read; smtp-server's own prose goes to our log at trace level.
   */
  private protocolObserver(): Record<string, (entry: Record<string, unknown>, message?: string, ...args: unknown[]) => void> {
    const trace = (entry: Record<string, unknown>, message?: string, ...args: unknown[]): void => {
      if (this.deps.logger.isLevelEnabled('trace')) this.deps.logger.trace({ smtp: entry }, String(message ?? ''), ...args);
    };
    const observe = (entry: Record<string, unknown>, message?: string, ...args: unknown[]): void => {
      const live = typeof entry.cid === 'string' ? this.sessions.get(entry.cid) : undefined;
      if (live) this.observeProtocolEvent(live, entry.tnx, args[0]);
      trace(entry, message, ...args);
    };
    return { trace, debug: observe, info: observe, warn: trace, error: trace, fatal: trace };
  }

  private observeProtocolEvent(live: LiveSession, tnx: unknown, payload: unknown): void {
    if (tnx === 'command') {
      live.commands += 1;
      this.deps.observer.command();
      live.lastCommand = String(payload ?? '').slice(0, 4).toUpperCase().trim();
      if (!live.greeted && live.end === undefined) live.end = 'early-talker';
      if (live.pairs.clientAnswered()) this.deps.observer.pair(live.connection.remoteAddress, 'normal');
    } else if (tnx === 'send') {
      const text = String(payload ?? '');
      const code = Number(text.slice(0, 3));
      if (!live.greeted && code === 220) live.greeted = true;
      if (code === 421 && live.end === undefined) live.end = endFromClosingReply(text, live.greeted);
      live.pairs.replySent(code, live.refusing);
    }
  }
}

function endFromClosingReply(text: string, greeted: boolean): SessionEnd {
  if (/Too many connected clients/i.test(text)) return 'too-many-clients';
  if (/Timeout/i.test(text)) return 'idle-timeout';
  if (/shutting down/i.test(text)) return 'server-shutdown';
  return greeted ? 'refused' : 'early-talker';
}

/** Set-up faults are logged the first time they are seen, not once per session. */
function onceNotices(logger: Logger): RelayNotices {
  const seen = new Set<string>();
  const once = (key: string, log: () => void): void => {
    if (seen.has(key)) return;
    seen.add(key);
    log();
  };
  return {
    xclientNotOffered: (upstream) => once('xclient-not-offered', () => logger.warn(
      { upstream },
      'Postfix does not offer XCLIENT to the proxy, so it sees the proxy as the client: set smtpd_authorized_xclient_hosts',
    )),
    xclientRefused: (upstreamReply) => once(`xclient-refused`, () => logger.error(
      { upstreamReply },
      'Postfix refused XCLIENT: list this proxy in smtpd_authorized_xclient_hosts (mail is deferred with 451 meanwhile)',
    )),
  };
}

function smtpError(reply: RelayReply): Error {
  const error = new Error(reply.text) as Error & { responseCode: number };
  error.responseCode = reply.code;
  return error;
}

/** smtp-server's set of live connections, with a callback when one is added (see the constructor). */
class ConnectionSet<T> extends Set<T> {
  constructor(private readonly onAdd: (connection: T) => void) {
    super();
  }

  override add(connection: T): this {
    super.add(connection);
    this.onAdd(connection);
    return this;
  }
}
