// The SMTP listener: the only module that touches smtp-server (as ZoneMTA's smtp-interface.js).
// It accepts clients, follows every command and reply of each session, asks the screen stage what
// to do with a new client and carries it out (greet wait, tarpit delays, refusals), hands MAIL/RCPT/
// DATA to the relay stage, enforces the session deadline, drains sessions at shutdown, and at the
// end of each session emits one SessionRecord. The commands whose meaning the proxy owns (MAIL, RCPT,
// EHLO, RSET, QUIT …) are installed on each connection by command-handlers.ts, the only other module
// that touches smtp-server. Commands and replies are observed through smtp-server's logger
// interface, which reports every one of them with the session id (tnx "command" and "send"); the
// end of a message is seen in onData. test/integration/session-limits.test.ts ("pairs") pins that.
// In observe mode (the policy in force, reloaded) the screen's decisions are only noted: an early
// talker gets its greeting (command-handlers.ts) and stress leaves the idle time-out as configured;
// the limits that protect the proxy and Postfix's processes (slots, eviction, caps) still apply.
import { readFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { Logger } from 'pino';
import type { Policy } from '../config/schema.js';
import { canonicalAddress } from '../detect/prefix.js';
import type { ReverseDnsLookup } from '../dns/fcrdns.js';
import { SessionRelay, type RelayNotices, type RelayReply } from '../relay/session-relay.js';
import { dataOutcome, type SessionEnd, type SessionRecord, type TransactionRecord } from '../session/record.js';
import type { UpstreamOptions } from '../upstream/connection.js';
import { clientNameFields } from '../upstream/xclient.js';
import { ExpiringMap } from '../state/expiring-map.js';
import { HalfOpenNetworks } from './half-open-networks.js';
import { installCommandHandlers, startWithoutFixedGreetDelay, type ConnectionInternals } from './command-handlers.js';
import { chooseEviction, chooseHalfOpen, HALF_OPEN_MIN_IDLE_MS, spreadIdleCloses, type EvictionCount, type EvictionView } from './eviction.js';
import { UpstreamShare } from '../relay/upstream-share.js';
import { SourceConcurrency } from './source-concurrency.js';
import { formatParameters, parameterValue, refuseParameters, type EnvelopeCommand, type EnvelopeVerb } from './envelope-command.js';
import { LiveSession, type SmtpConnectionHandle } from './live-session.js';
import { MessageTooBigError, type QuarantineEntry, type QuarantineSink, type SessionObserver, type SessionScreen, type TarpitSlots } from './stage-contracts.js';

export interface ListenerDependencies {
  /** The policy at start: what the listener is built from (server, limits, upstream need a restart). */
  policy: Policy;
  /** The policy in force now, after reloads: its mode and pushback.stressIdleTimeoutSeconds. Default: policy. */
  current?: () => Policy;
  logger: Logger;
  observer: SessionObserver;
  /** Asked at each new connection; a reply refuses the session with it (e.g. shared state down, fail closed). */
  admission?: () => RelayReply | undefined;
  screen?: SessionScreen;
  tarpits?: TarpitSlots;
  quarantine?: QuarantineSink;
  /** Forward-confirmed reverse DNS of clients (server.reverseDns); absent: none, Postfix hears NAME=[UNAVAILABLE]. */
  reverseDns?: ReverseDnsLookup;
  /** Client sessions at once, as sized at start (capacity.ts); default: policy.server.maxClients or 20,000. */
  maxClients?: number;
}

export class SmtpListener {
  private readonly server: SMTPServer;
  private readonly sessions = new Map<string, LiveSession>();
  private readonly upstreamOptions: UpstreamOptions;
  private readonly relayNotices: RelayNotices;
  private readonly shuttingDown: RelayReply;
  /** Told the id of every session that ends (drain waits). */
  private readonly endWatchers = new Set<(id: string) => void>();
  private drainStarted = false;
  /** Postfix's EHLO keywords as last seen; undefined until the first upstream connection. */
  private upstreamCapabilities: ReadonlyMap<string, string> | undefined;
  readonly maxClients: number;
  /** Sessions closed to make room that have not ended yet: they hold no slot. */
  private evictedOpen = 0;
  /** Connections refused at connect whose close has not been seen yet: not sessions (activeSessions). */
  private refusedOpen = 0;
  private readonly concurrency: SourceConcurrency;
  /** Postfix processes held for clients: per address, and the untrusted clients' share (upstream-share.ts). */
  private readonly upstreamShare: UpstreamShare;
  private readonly halfOpenNetworks = new HalfOpenNetworks();
  /**
   * Clients the screen refused at connect on a verdict, for a few seconds: their next connections are
   * answered from here, before smtp-server builds a session for them (see refuseAtAccept).
   */
  private refusedAtConnect = new ExpiringMap<RelayReply>(REFUSED_AT_ACCEPT_ENTRIES);
  /** The policy those refusals were decided under: a reload (an allow list, say) forgets them. */
  private refusedUnder: Policy | undefined;
  /** server.proxyProtocolFrom, canonical: a session still "from" one of these got no client address from it. */
  private readonly proxyBalancers: ReadonlySet<string>;
  /** Evictions and capacity refusals since the last aggregate log line (at most one a second). */
  private capacityEvents: Partial<Record<EvictionCount | 'refused-full' | 'refused-address' | 'refused-prefix' | 'upstream-refused-address' | 'upstream-refused-share', number>> = {};
  private capacityLogTimer: NodeJS.Timeout | undefined;
  /** Bumped at each idle time-out change: the one-shot idle checks of an earlier change stand down. */
  private idleTimeoutGeneration = 0;

  constructor(private readonly deps: ListenerDependencies) {
    const { policy } = deps;
    this.maxClients = deps.maxClients ?? policy.server.maxClients ?? 20_000;
    this.concurrency = new SourceConcurrency(concurrencyLimits(policy));
    this.upstreamShare = new UpstreamShare({
      maxConnections: policy.upstream.maxConnections,
      perAddress: policy.upstream.maxConnectionsPerAddress,
      untrustedPercent: policy.upstream.untrustedSharePercent,
      stressPercent: UPSTREAM_STRESS_PERCENT,
    });
    this.upstreamOptions = {
      host: policy.upstream.address.host,
      port: policy.upstream.address.port,
      heloName: policy.upstream.heloName ?? policy.server.hostname,
      xclient: policy.upstream.xclient,
      connectTimeoutMs: policy.upstream.connectTimeoutMs,
      replyTimeoutMs: policy.upstream.replyTimeoutMs,
      dataStallTimeoutMs: policy.upstream.dataStallTimeoutMs,
      dataDoneTimeoutMs: policy.upstream.dataDoneTimeoutMs,
      observeCapabilities: (capabilities) => {
        this.upstreamCapabilities = capabilities;
      },
    };
    this.relayNotices = onceNotices(deps.logger);
    this.proxyBalancers = new Set(policy.server.proxyProtocolFrom.map(canonicalAddress));
    this.shuttingDown = { code: 421, text: `4.3.2 ${policy.server.hostname} Service shutting down, try again later` };
    this.server = new SMTPServer(this.serverOptions(policy));
    // Ahead of smtp-server's own connection handler: a client refused on a verdict moments ago hears the
    // same refusal at once. In a flood most connections are such, and a full session costs several times more.
    const netServer = this.server.server;
    const handlers = netServer.listeners('connection') as Array<(socket: net.Socket) => void>;
    netServer.removeAllListeners('connection');
    netServer.on('connection', (socket: net.Socket) => {
      if (this.refuseAtAccept(socket)) return;
      for (const handler of handlers) handler.call(netServer, socket);
    });
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
      this.server.listen(port, host, LISTEN_BACKLOG, () => {
        netServer.off('error', onError);
        resolve(netServer.address() as AddressInfo);
      });
    });
  }

  /** Stops accepting; open sessions get smtp-server's 421 after its close timeout. */
  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** Sessions open now; a connection refused at connect (421, 554) is none, even before its close is seen. */
  get activeSessions(): number {
    return this.sessions.size - this.refusedOpen;
  }

  /** Observe mode (as reloaded): decisions are logged and counted, none changes a session. */
  private get observing(): boolean {
    return (this.deps.current?.() ?? this.deps.policy).mode === 'observe';
  }

  /** Postfix processes held near upstream.maxConnections: treated as stress, like a status of 0. */
  get upstreamNearLimit(): boolean {
    return this.upstreamShare.nearLimit;
  }

  upstreamShareStats(): ReturnType<UpstreamShare['stats']> {
    return this.upstreamShare.stats();
  }

  /** True once a shutdown drain has begun: the proxy takes no new mail. */
  get draining(): boolean {
    return this.drainStarted;
  }

  /**
   * Starts the shutdown drain: from now on new connections and new transactions (MAIL FROM) get
   * 421 and a close, while the listening socket stays open so clients hear that 421 rather than a
   * refused connection. Resolves once every session open now has ended.
   */
  drain(): Promise<void> {
    this.drainStarted = true;
    return this.whenEnded([...this.sessions.keys()]);
  }

  /**
   * Ends the drain: every session left gets 421 and is closed, except one whose message is with
   * Postfix or the spool, which hears that final reply first (else its client would send the message
   * again). now: not even that wait (a second signal). Resolves once these sessions have ended.
   */
  closeSessions(now: boolean): Promise<void> {
    const ids = [...this.sessions.keys()];
    for (const live of this.sessions.values()) this.closeSession(live, 'server-shutdown', this.shuttingDown, now);
    return this.whenEnded(ids);
  }

  /**
   * Stress (status 0 or -1, or Postfix near its process limit) shortens the idle time-out to
   * pushback.stressIdleTimeoutSeconds, like Postfix's smtpd_timeout = ${stress?10}${stress:300}s; in
   * observe mode it stays limits.idleTimeoutSeconds (a trial changes no session). Called once a tick.
   */
  applyStress(stressed: boolean): void {
    const current = this.deps.current?.() ?? this.deps.policy;
    const calmSeconds = this.deps.policy.limits.idleTimeoutSeconds;
    this.setIdleTimeoutSeconds(stressed && current.mode === 'enforce' ? Math.min(current.pushback.stressIdleTimeoutSeconds, calmSeconds) : calmSeconds);
  }

  /** The idle timeout for sessions from now on. smtp-server reads it whenever it arms a socket. */
  setIdleTimeoutSeconds(seconds: number): void {
    const milliseconds = seconds * 1000;
    if (this.server.options.socketTimeout === milliseconds) return;
    this.server.options.socketTimeout = milliseconds;
    // Sockets already armed keep their timeout until re-armed: change it now, so an idle flood that
    // arrived before the stress began is not held for the full calm-time timeout. The socket gets the
    // whole new time-out (it stays the socket's inactivity limit); an idle session also gets a one-shot
    // check at what is left counted from its last command, so the flood is closed in the order it went
    // quiet, at a bounded rate (spreadIdleCloses), not ten thousand sockets at once.
    const generation = ++this.idleTimeoutGeneration;
    const nowMs = Date.now();
    const idle: LiveSession[] = [];
    for (const live of this.sessions.values()) {
      const socket = live.connection._socket;
      if (!socket) continue;
      socket.setTimeout(milliseconds);
      if (!live.inTransaction && nowMs - live.lastActivityMs > 0) idle.push(live);
    }
    const delays = spreadIdleCloses(idle.map((live) => nowMs - live.lastActivityMs), milliseconds);
    idle.forEach((live, index) => {
      const delayMs = delays[index] as number;
      // Not sooner than the socket's own time-out would: nothing to do (calm again, or a fresh session).
      if (delayMs >= milliseconds) return;
      const quietSinceMs = live.lastActivityMs;
      setTimeout(() => {
        if (generation !== this.idleTimeoutGeneration || live.closed || live.lastActivityMs !== quietSinceMs || live.inTransaction) return;
        this.closeIdleSession(live);
      }, delayMs).unref();
    });
  }

  /** An idle session past the (shortened) idle time-out: Postfix's words, and smtp-server closes after a 421. */
  private closeIdleSession(live: LiveSession): void {
    if (live.end === undefined) live.end = 'idle-timeout';
    live.connection.send(421, `4.4.2 ${this.deps.policy.server.hostname} Error: timeout exceeded`, false);
  }

  /**
   * Open pairs older than timeoutMs become abnormal now (called about once a second). Not during
   * DATA: a client uploading a large message is answering our 354 all along.
   */
  expireUnansweredPairs(nowMs: number, timeoutMs: number): void {
    for (const live of this.sessions.values()) {
      if (!live.inData && live.pairs.expireOpenPair(nowMs - timeoutMs)) this.deps.observer.pair(live.client, 'abnormal');
    }
  }

  private serverOptions(policy: Policy): SMTPServerOptions {
    const tls = policy.server.tls;
    const options: SMTPServerOptions = {
      name: policy.server.hostname,
      banner: policy.server.banner,
      heloResponse: '%s',
      size: policy.limits.maxMessageBytes,
      maxRecipients: policy.limits.maxRecipients,
      // Capacity is ours (sessionStarted): smtp-server's cap can only refuse the newcomer.
      maxClients: 0,
      maxCommandLength: policy.limits.maxLineBytes,
      socketTimeout: policy.limits.idleTimeoutSeconds * 1000,
      closeTimeout: 10_000,
      // Reverse DNS is ours (deps.reverseDns, forward-confirmed): smtp-server's is a bare PTR lookup,
      // and a PTR alone is whatever the owner of the address wants it to say.
      disableReverseLookup: true,
      // A FIN from the client ends its input, not our replies (see command-handlers.ts).
      allowHalfOpen: true,
      useProxy: policy.server.proxyProtocolFrom.length > 0 ? [...policy.server.proxyProtocolFrom] : false,
      useXClient: false,
      useXForward: false,
      authOptional: true,
      // smtp-server's own extras (HELP, VRFY, sendmail's WIZ/SHELL/KILL jokes) are not Postfix's:
      // "502 5.5.2 Error: command not recognized", as Postfix says to an unknown command.
      disabledCommands: [...(tls ? [] : ['STARTTLS']), 'AUTH', 'HELP', 'VRFY', 'WIZ', 'SHELL', 'KILL', 'XCLIENT', 'XFORWARD'],
      hideSTARTTLS: !tls,
      hidePIPELINING: policy.server.hidePipelining,
      // Postfix's replies carry their own enhanced status codes and we pass them through verbatim;
      // smtp-server's own replies get Postfix's codes in command-handlers.ts, which also advertises
      // ENHANCEDSTATUSCODES and DSN.
      hideENHANCEDSTATUSCODES: true,
      logger: this.protocolObserver(),
      onConnect: (session, callback) => this.onConnect(session, callback),
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
    const { policy } = this.deps;
    const deadline = setTimeout(() => {
      this.closeSession(live, 'deadline', { code: 421, text: `4.4.2 ${policy.server.hostname} Error: session deadline exceeded, closing` }, false);
    }, policy.limits.sessionDeadlineSeconds * 1000);
    deadline.unref();
    // Postfix's replies are told with the client they were for: back-pressure weighs 4xx per source.
    const upstreamOptions: UpstreamOptions = {
      ...this.upstreamOptions,
      observeReply: (step, milliseconds, code) => this.deps.observer.upstreamReply(step, milliseconds, code, { address: live.client, suspect: isSuspect(live) }),
    };
    const live = new LiveSession(connection, new SessionRelay(upstreamOptions, this.relayNotices), deadline);
    if (policy.server.hidePipelining) connection._socket?.on('data', (chunk: Buffer) => live.rawChunk(chunk));
    this.sessions.set(connection.id, live);
    const counted = this.concurrency.enter(live.client);
    live.concurrencyKeys = counted.keys;
    live.concurrencyExcess = counted.excess;
    this.makeRoom(live);
    const internals = connection as unknown as ConnectionInternals & { session: SMTPServerSession };
    startWithoutFixedGreetDelay(internals);
    installCommandHandlers(internals, {
      envelope: (verb, command) => this.onEnvelope(live, internals.session, verb, command),
      ehloKeywords: (secure) => this.ehloKeywords(secure),
      maxRecipients: policy.limits.maxRecipients,
      // Everything the client sent before its FIN has been answered: nothing more can come.
      inputEnded: () => {
        if (!live.closed) connection.close();
      },
      // Observe mode: an early talker is noted (and scored as ever) but gets the greeting and its session.
      holdEarlyCommands: () => this.observing,
      earlyTalk: () => {
        live.misbehaviour.earlyTalker = true;
      },
    });
  }

  /**
   * What we advertise after EHLO, in Postfix's order: what Postfix offers (as last seen; its
   * defaults before the first upstream connection) and the proxy carries. No CHUNKING (BDAT is not
   * relayed), no VRFY or ETRN (the proxy cannot answer for Postfix's queue or users).
   */
  private ehloKeywords(secure: boolean): string[] {
    const { policy } = this.deps;
    const offers = (keyword: string): boolean => this.upstreamCapabilities?.has(keyword) ?? true;
    const keywords: string[] = [];
    if (!policy.server.hidePipelining) keywords.push('PIPELINING');
    keywords.push(`SIZE ${policy.limits.maxMessageBytes}`);
    if (policy.server.tls && !secure) keywords.push('STARTTLS');
    keywords.push('ENHANCEDSTATUSCODES', '8BITMIME');
    if (offers('DSN')) keywords.push('DSN');
    if (offers('SMTPUTF8')) keywords.push('SMTPUTF8');
    return keywords;
  }

  /**
   * A newcomer above the high-water mark makes room: the session that least looks like mail is
   * closed with 421 (eviction.ts). When none can go and the cap is reached, the newcomer is marked
   * to be refused at connect. Bounded work: at most EVICTION_SCAN sessions are looked at.
   */
  private makeRoom(newcomer: LiveSession): void {
    const holding = this.sessions.size - this.evictedOpen;
    const highWater = Math.max(1, Math.floor((this.maxClients * this.deps.policy.server.evictAbovePercent) / 100));
    if (holding <= highWater) return;
    const choice = chooseEviction(this.sessions.values(), (live) => this.evictionView(live, newcomer), EVICTION_SCAN);
    if (choice) {
      this.evict(choice.session, choice.reason);
      return;
    }
    if (holding > this.maxClients) newcomer.overCapacity = true;
  }

  private evictionView(live: LiveSession, newcomer: LiveSession): EvictionView {
    return {
      inTransaction: live.inTransaction,
      closing: live === newcomer || live.evicted || live.closed || live.refusing || live.end !== undefined,
      commands: live.commands,
      transactions: live.transactions.length,
      suspect: live.pairs.abnormal > 0 || live.decision.action !== 'pass',
      trusted: isTrusted(live),
      lastActivityMs: live.lastActivityMs,
    };
  }

  private evict(live: LiveSession, reason: EvictionCount): void {
    live.evicted = true;
    this.evictedOpen += 1;
    live.end = 'evicted';
    this.deps.observer.evicted?.(reason);
    this.countCapacityEvent(reason);
    // smtp-server closes the connection after any 421.
    live.connection.send(421, `4.7.0 ${this.deps.policy.server.hostname} Error: too many connections, closing idle session`, false);
  }

  /** Evictions and refusals for want of room are logged in aggregate, at most once a second: a flood makes thousands. */
  private countCapacityEvent(event: keyof SmtpListener['capacityEvents']): void {
    this.capacityEvents[event] = (this.capacityEvents[event] ?? 0) + 1;
    if (this.capacityLogTimer) return;
    this.capacityLogTimer = setTimeout(() => {
      this.capacityLogTimer = undefined;
      const events = this.capacityEvents;
      this.capacityEvents = {};
      this.deps.logger.warn({ ...events, sessions: this.sessions.size - this.evictedOpen, maxClients: this.maxClients }, 'client slots short: sessions evicted or refused in the last second');
    }, 1_000);
    this.capacityLogTimer.unref();
  }

  private onConnect(session: SMTPServerSession, callback: (error?: Error | null) => void): void {
    const live = this.sessions.get(session.id);
    if (!live) return callback();
    if (this.drainStarted) return this.refuse(live, this.shuttingDown, callback, 'server-shutdown');
    const host = this.deps.policy.server.hostname;
    // "PROXY UNKNOWN" (or a header naming the balancer itself) leaves the balancer's address as the
    // client: every client behind it would share one score, and an allow-listed balancer would pass all.
    if (this.fromProxyBalancer(live.client)) {
      return this.refuse(live, { code: 421, text: `4.7.0 ${host} PROXY header without a client address` }, callback);
    }
    if (live.overCapacity) {
      this.countCapacityEvent('refused-full');
      return this.refuse(live, { code: 421, text: `4.7.0 ${host} Error: too many connected clients, try again later` }, callback, 'too-many-clients');
    }
    const refusal = this.deps.admission?.();
    if (refusal) return this.refuse(live, refusal, callback);
    // Started now, awaited at the first MAIL: it adds no wait before the greeting.
    live.reverseDns = this.deps.reverseDns?.(live.client);
    const screen = this.deps.screen;
    if (!screen) return later(this.earlyTalkerWaitLeftMs(live), () => callback());
    screen.atConnect({ address: live.client, port: live.connection.remotePort }).then((decision) => {
      if (live.closed) return;
      live.decision = decision;
      if (decision.refuse) {
        if (decision.action === 'defer' || decision.action === 'reject') this.rememberRefusal(live.client, decision.refuse);
        return this.refuse(live, decision.refuse, callback);
      }
      const excess = isTrusted(live) ? undefined : live.concurrencyExcess;
      if (excess) {
        this.countCapacityEvent(excess.scope === 'address' ? 'refused-address' : 'refused-prefix');
        // Postfix's anvil words (smtpd_client_connection_count_limit), for the address or its network.
        return this.refuse(live, { code: 421, text: `4.7.0 ${host} Error: too many connections from ${excess.key}` }, callback, 'too-many-clients');
      }
      if (decision.action === 'tarpit') {
        if (!this.deps.tarpits?.tryEnter()) {
          // Beyond the cap, a new suspect costs us nothing more than this reply.
          return this.refuse(live, { code: 421, text: `4.7.0 ${this.deps.policy.server.hostname} Too busy, try again later` }, callback);
        }
        live.tarpitted = true;
      }
      // Talking during this wait is caught by smtp-server ("421 You talk too soon"): the early-talker test.
      // Proven and allow-listed clients skip it, as postscreen's cache skips its pregreet test.
      later(isTrusted(live) ? decision.greetDelayMs : Math.max(decision.greetDelayMs, this.earlyTalkerWaitLeftMs(live)), () => callback());
    }, (error: Error) => {
      this.deps.logger.error({ err: error, session: live.id }, 'screen failed; passing the client');
      callback();
    });
  }

  /** What is left of the shortest greeting wait of a client not trusted, counted from its connect. */
  private earlyTalkerWaitLeftMs(live: LiveSession): number {
    return EARLY_TALKER_WAIT_MS - (Date.now() - live.startedAtMs);
  }

  private rememberRefusal(client: string, reply: RelayReply): void {
    const policy = this.deps.current?.() ?? this.deps.policy;
    if (this.refusedUnder !== policy) {
      this.refusedAtConnect = new ExpiringMap<RelayReply>(REFUSED_AT_ACCEPT_ENTRIES);
      this.refusedUnder = policy;
    }
    const nowMs = Date.now();
    this.refusedAtConnect.put(canonicalAddress(client), reply, nowMs + REFUSED_AT_ACCEPT_MS, nowMs);
  }

  /**
   * A new connection from a client refused on a verdict within REFUSED_AT_ACCEPT_MS: the same reply and a
   * close, with no session built, screened or learned from (the verdict it would find is the one it got).
   * Counted as a refused session. Not for balancers (the client is in the PROXY header), nor once the
   * policy has been reloaded, nor during a drain (which answers every newcomer itself).
   */
  private refuseAtAccept(socket: net.Socket): boolean {
    const address = socket.remoteAddress;
    if (address === undefined || this.drainStarted || this.refusedUnder !== (this.deps.current?.() ?? this.deps.policy)) return false;
    if (this.fromProxyBalancer(address)) return false;
    const reply = this.refusedAtConnect.live(canonicalAddress(address), Date.now())?.value;
    if (!reply) return false;
    // Not counted against maxClients, so it must not hold its descriptor: closed once the reply is written
    // (a client that keeps its end open or sends more gets a reset), at the latest after a short wait.
    socket.on('error', () => socket.destroy());
    socket.setTimeout(REFUSED_AT_ACCEPT_CLOSE_MS, () => socket.destroy());
    socket.end(`${reply.code} ${reply.text}\r\n`, () => socket.destroy());
    this.deps.observer.refusedAtAccept?.();
    return true;
  }

  /** Whether a session's client address is one of the PROXY protocol balancers'. */
  private fromProxyBalancer(client: string): boolean {
    return this.proxyBalancers.size > 0 && net.isIP(client) !== 0 && this.proxyBalancers.has(canonicalAddress(client));
  }

  /**
   * A Postfix process for this session's transaction, or the reply when none may be had. When the client's
   * address or the untrusted clients hold their share, the transaction silent the longest among them (2 s or
   * more, not in DATA) is cut with 421 to make room; only when there is none does this client hear 451.
   */
  private async takeUpstreamSlot(live: LiveSession): Promise<RelayReply | undefined> {
    if (live.upstreamSlot) return undefined;
    const trusted = isTrusted(live);
    const network = live.concurrencyKeys[1];
    for (let attempt = 0; ; attempt += 1) {
      const refusal = this.upstreamShare.refusal(live.client, trusted);
      if (!refusal) break;
      if (refusal === 'untrusted' && network !== undefined && this.halfOpenNetworks.isAttackerSet(network, Date.now())) {
        // Its own network's transactions keep being cut: it may take a free process, not cut another's.
        this.countCapacityEvent('upstream-refused-share');
        return { code: 451, text: `4.3.2 ${this.deps.policy.server.hostname} Error: all server ports are busy, try again later` };
      }
      const victim = chooseHalfOpen(this.sessions.values(), (other) => ({
        holdsUntrustedSlot: other.upstreamSlot !== undefined && !other.upstreamSlot.trusted,
        inData: other.inData || other.awaitingFinalReply,
        closing: other === live || other.evicted || other.closed || other.end !== undefined || other.envelopePending,
        lastActivityMs: other.lastEnvelopeMs,
        sameAddress: other.client === live.client,
      }), Date.now(), refusal === 'address');
      if (victim) {
        const victimNetwork = victim.concurrencyKeys[1];
        if (victimNetwork !== undefined) this.halfOpenNetworks.cut(victimNetwork, Date.now());
        this.evict(victim, 'half-open');
        victim.relay.close();
        this.releaseUpstreamSlot(victim);
        break;
      }
      // One address over its own share waits for nothing: only its own transactions could give way.
      if (attempt > 0 || live.closed || refusal === 'address') {
        this.countCapacityEvent(refusal === 'address' ? 'upstream-refused-address' : 'upstream-refused-share');
        return refusal === 'address'
          ? { code: 451, text: `4.7.0 ${this.deps.policy.server.hostname} Error: too many transactions from ${live.client} at once, try again later` }
          : { code: 451, text: `4.3.2 ${this.deps.policy.server.hostname} Error: all server ports are busy, try again later` };
      }
      // A flood of half-open transactions keeps every one of them younger than the floor for a moment:
      // by the end of one floor's wait the oldest has been silent long enough to give way.
      await new Promise<void>((resolve) => later(HALF_OPEN_MIN_IDLE_MS, resolve));
    }
    live.upstreamSlot = this.upstreamShare.acquire(live.client, trusted);
    return undefined;
  }

  private releaseUpstreamSlot(live: LiveSession): void {
    if (!live.upstreamSlot) return;
    this.upstreamShare.release(live.upstreamSlot);
    live.upstreamSlot = undefined;
  }

  private refuse(live: LiveSession, reply: RelayReply, callback: (error?: Error | null) => void, end: SessionEnd = 'refused'): void {
    // smtp-server hangs up right after a refusal at connect: that reply expects no answer.
    live.end = end;
    live.refusing = true;
    this.refusedOpen += 1;
    callback(smtpError(reply));
    // smtp-server only half-closes (our FIN) and keeps the socket until the client closes its end or
    // 5 s pass: a refused client that keeps its end open would hold a descriptor, and count as a
    // session in a drain. Closed whole once the reply is written.
    live.connection._socket?.destroySoon();
  }

  /** MAIL and RCPT as the client sent them: the reply it gets, after the tarpit's delay. */
  private onEnvelope(live: LiveSession, session: SMTPServerSession, verb: EnvelopeVerb, command: EnvelopeCommand): Promise<RelayReply> {
    // Postfix's smtpd_hard_error_limit (20): a client refused that often is done. Without it, once
    // Postfix has hung up on such a client, every further RCPT would be ours to answer at no cost.
    if (live.errorReplies >= HARD_ERROR_LIMIT) {
      live.end ??= 'refused';
      return Promise.resolve({ code: 421, text: `4.7.0 ${this.deps.policy.server.hostname} Error: too many errors` });
    }
    const refusal = refuseParameters(verb, command.parameters, {
      dsn: this.upstreamCapabilities?.has('DSN') ?? true,
      smtputf8: this.upstreamCapabilities?.has('SMTPUTF8') ?? true,
      maxMessageBytes: this.deps.policy.limits.maxMessageBytes,
    });
    if (refusal) return Promise.resolve(refusal);
    live.envelopePending = true;
    // The tarpit's delay comes before the command goes to Postfix, not after its reply: a client being
    // slowed down must not hold an smtpd process of Postfix's while it waits.
    const forward = (): Promise<RelayReply> => {
      if (live.closed) return Promise.resolve(CLIENT_GONE);
      return verb === 'MAIL' ? this.onMailFrom(live, session, command) : this.onRcptTo(live, command);
    };
    const delayMs = live.decision.replyDelayMs;
    const reply = delayMs > 0 ? new Promise<void>((resolve) => later(delayMs, resolve)).then(forward) : forward();
    const answered = (): void => {
      live.envelopePending = false;
      live.lastEnvelopeMs = Date.now();
    };
    return reply.then((result) => {
      answered();
      return result;
    }, (error: Error) => {
      answered();
      this.internalErrorLogged(live, error);
      return INTERNAL_ERROR;
    });
  }

  private async onMailFrom(live: LiveSession, session: SMTPServerSession, command: EnvelopeCommand): Promise<RelayReply> {
    if (this.drainStarted) {
      // A transaction under way finishes; a new one is deferred, so the drain does not wait on it.
      live.end = 'server-shutdown';
      return this.shuttingDown;
    }
    live.helo = session.hostNameAppearsAs || undefined;
    const names = clientNameFields(await live.reverseDns);
    live.clientName = names.hostname;
    const transaction: TransactionRecord = { from: command.address, rcpt: [], rejected: [], outcome: 'incomplete' };
    live.startTransaction(transaction);
    live.mailParams = Object.fromEntries(command.parameters.map(({ keyword, value }) => [keyword, value ?? true]));
    live.recipientParams = {};
    const declared = parameterValue(command.parameters, 'SIZE');
    const declaredBytes = typeof declared === 'string' ? Number(declared) : 0;
    let result: RelayReply;
    if (live.decision.quarantine && this.deps.quarantine && !this.deps.quarantine.canAccept(declaredBytes)) {
      // Full quarantine: the sender retries later rather than losing mail or having it relayed.
      result = SPOOL_FULL;
    } else if (live.decision.refuseRecipients) {
      // Every recipient will be refused: no need to cost Postfix a connection for this transaction.
      result = { code: 250, text: '2.1.0 Ok' };
    } else {
      const noSlot = await this.takeUpstreamSlot(live);
      if (noSlot) return noSlot;
      result = await live.relay.mailFrom({
        address: session.remoteAddress,
        port: session.remotePort,
        ...names,
        helo: live.helo,
        protocol: session.openingCommand === 'HELO' ? 'SMTP' : 'ESMTP',
      }, command.path, command.parameters);
      if (!live.relay.holdsUpstream) this.releaseUpstreamSlot(live);
    }
    if (result.code >= 400) {
      transaction.outcome = result.code < 500 ? 'deferred' : 'rejected';
      transaction.reply = `${result.code} ${result.text}`;
    }
    return result;
  }

  private async onRcptTo(live: LiveSession, command: EnvelopeCommand): Promise<RelayReply> {
    const transaction = live.current;
    if (!transaction) return { code: 503, text: '5.5.1 Error: need MAIL command' };
    const refusal = live.decision.refuseRecipients;
    const result = refusal ?? await live.relay.rcptTo(command.path, command.parameters);
    if (result.code < 400) {
      transaction.rcpt.push(command.address);
      const dsn = formatParameters(command.parameters.filter(({ keyword }) => keyword === 'NOTIFY' || keyword === 'ORCPT'));
      if (dsn !== '') live.recipientParams[command.address] = dsn;
      return result;
    }
    live.recipientRefused(transaction, command.address, `${result.code} ${result.text}`);
    if (refusal) transaction.outcome = refusal.code < 500 ? 'deferred' : 'rejected';
    return result;
  }

  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (error?: Error | null, message?: string) => void): void {
    const live = this.sessions.get(session.id);
    const transaction = live?.current;
    if (!live || !transaction) return callback(smtpError({ code: 451, text: '4.3.0 Session state lost' }));
    const started = performance.now();
    const limit = this.deps.policy.limits.maxMessageBytes;
    const abortReason = (): string | undefined => (stream.sizeExceeded ? `message over ${limit} bytes` : undefined);
    const quarantine = live.decision.quarantine && this.deps.quarantine;
    // The client answered our 354 when its message reached the final dot, whatever Postfix then
    // takes to answer; a client that drops leaves the pair open (abnormal).
    stream.once('end', () => {
      live.awaitingFinalReply = true;
      if (live.messageEnded(stream.byteLength, true)) this.deps.observer.pair(live.client, 'normal');
    });
    const delivered = quarantine
      ? this.quarantineMessage(live, session, transaction, stream, quarantine)
      : live.relay.data(stream, abortReason);
    this.answer(live, delivered, (reply) => {
      live.awaitingFinalReply = false;
      live.lastEnvelopeMs = Date.now();
      transaction.bytes = stream.byteLength;
      transaction.dataMs = Math.round(performance.now() - started);
      live.current = undefined;
      if (stream.sizeExceeded) {
        // smtp-server answers 552 itself for an oversized message, whatever we say here.
        transaction.outcome = 'rejected';
        transaction.reply = `552 5.3.4 Error: message exceeds fixed maximum message size ${limit}`;
        return callback(smtpError({ code: 552, text: transaction.reply.slice(4) }));
      }
      transaction.outcome = reply.failure && !stream.readableEnded ? 'aborted' : quarantine && reply.code === 250 ? 'quarantined' : dataOutcome(reply.code);
      transaction.reply = `${reply.code} ${reply.text}`;
      // A tarpitted client's next MAIL waits out its delay first: Postfix's process is not kept for that wait.
      if (live.tarpitted || !live.relay.holdsUpstream) {
        live.relay.releaseUpstream();
        this.releaseUpstreamSlot(live);
      }
      if (reply.code < 400) callback(null, reply.text);
      else callback(smtpError(reply));
      // A deadline or the end of a drain that came while Postfix (or the spool) had the message
      // waited for this reply: the client must hear how its message ended, or it would send it again.
      if (live.closingReply) live.connection.send(live.closingReply.code, live.closingReply.text, false);
    }, callback);
  }

  /**
   * Writes the message to the quarantine instead of relaying it; 250 only once it is durable. The
   * recipients were checked live with Postfix, whose open transaction is reset now.
   */
  private async quarantineMessage(
    live: LiveSession,
    session: SMTPServerSession,
    transaction: TransactionRecord,
    stream: SMTPServerDataStream,
    sink: QuarantineSink,
  ): Promise<RelayReply> {
    live.relay.resetTransaction();
    const verdict = live.decision.quarantine ?? { reasons: [], score: 0 };
    const entry: QuarantineEntry = {
      client: { address: live.client, port: live.connection.remotePort, helo: live.helo ?? '' , ...(live.clientName ? { hostname: live.clientName } : {}) },
      mailFrom: { address: transaction.from, params: live.mailParams },
      recipients: [...transaction.rcpt],
      ...(Object.keys(live.recipientParams).length > 0 ? { recipientParams: { ...live.recipientParams } } : {}),
      verdict,
      protocol: session.openingCommand === 'HELO' ? 'SMTP' : 'ESMTP',
    };
    // Over the size limit the write is abandoned before the chunk that crossed it (smtp-server
    // answers 552 itself); the spool drains the rest of the message.
    const tooBig = (): Error | undefined => (stream.sizeExceeded ? new MessageTooBigError() : undefined);
    const result = await sink.store(entry, stream, tooBig);
    if (result.stored) {
      transaction.quarantineId = result.id;
      return { code: 250, text: `2.0.0 Ok: queued as ${result.id}` };
    }
    if (result.reason === 'full') return SPOOL_FULL;
    return { code: 451, text: '4.3.0 Error: message not stored, try again later', failure: `${result.reason}: ${result.detail}` };
  }

  /** Hands a reply to smtp-server, after the tarpit's delay when the session is tarpitted. */
  private answer(live: LiveSession, reply: Promise<RelayReply>, deliver: (reply: RelayReply) => void, callback: (error?: Error | null) => void): void {
    reply.then((result) => later(live.decision.replyDelayMs, () => deliver(result)), (error: Error) => callback(this.internalError(live, error)));
  }

  /**
   * Closes a session with a 421 (deadline, end of a drain). Not while its message is with Postfix or
   * the spool, unless now: onData sends the 421 after that final reply.
   */
  private closeSession(live: LiveSession, end: SessionEnd, reply: RelayReply, now: boolean): void {
    live.end = end;
    if (live.awaitingFinalReply && !now) {
      live.closingReply = reply;
      return;
    }
    live.connection.send(reply.code, reply.text, false);
  }

  /** Resolves once none of these sessions is open any more. */
  private whenEnded(ids: string[]): Promise<void> {
    const waiting = new Set(ids.filter((id) => this.sessions.has(id)));
    if (waiting.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const watcher = (id: string): void => {
        waiting.delete(id);
        if (waiting.size > 0) return;
        this.endWatchers.delete(watcher);
        resolve();
      };
      this.endWatchers.add(watcher);
    });
  }

  private sessionEnded(session: SMTPServerSession): void {
    const live = this.sessions.get(session.id);
    if (!live) return;
    this.sessions.delete(session.id);
    if (live.evicted) this.evictedOpen -= 1;
    if (live.refusing) this.refusedOpen -= 1;
    this.concurrency.leave(live.concurrencyKeys);
    for (const watcher of this.endWatchers) watcher(session.id);
    clearTimeout(live.deadline);
    live.relay.close();
    this.releaseUpstreamSlot(live);
    if (live.tarpitted) this.deps.tarpits?.leave();
    const expiredBefore = live.pairs.abnormal;
    const record = live.finish();
    // Only the abnormal pair closed by the end itself is new; expired ones were counted as they expired.
    if (record.pairs.abnormal > expiredBefore) this.deps.observer.pair(live.client, 'abnormal');
    this.deps.logger.info(record, 'session');
    this.deps.observer.sessionEnded(record);
  }

  /** A bug of ours must not leave the client hanging or say 250: 451, logged with the stack. */
  private internalError(live: LiveSession, error: Error): Error {
    this.internalErrorLogged(live, error);
    return smtpError(INTERNAL_ERROR);
  }

  private internalErrorLogged(live: LiveSession, error: Error): void {
    this.deps.logger.error({ err: error, session: live.id }, 'internal error in session');
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
      if (live && entry.tnx === 'command') {
        this.deps.observer.command();
        if (live.commandReceived(String(args[0] ?? ''))) this.deps.observer.pair(live.client, 'normal');
      } else if (live && entry.tnx === 'send') {
        live.replySent(String(args[0] ?? ''));
      }
      trace(entry, message, ...args);
    };
    return { trace, debug: observe, info: observe, warn: trace, error: trace, fatal: trace };
  }
}

/** How long a refusal on a verdict is answered at accept, without a session: short, as verdicts change. */
const REFUSED_AT_ACCEPT_MS = 10_000;
/** Clients remembered so: bounded, the ones expiring soonest make room. */
const REFUSED_AT_ACCEPT_ENTRIES = 50_000;
/** A refusal at accept whose reply cannot be written (a client that reads nothing) is cut after this. */
const REFUSED_AT_ACCEPT_CLOSE_MS = 2_000;

/**
 * Connections the kernel queues for accept() (capped by net.core.somaxconn). Node's 511 overflows in
 * a burst of a thousand connections a second, and a client whose SYN is dropped retries only after
 * a second (then three): a legitimate sender behind a flood would wait that long for a greeting.
 */
const LISTEN_BACKLOG = 4_096;

/**
 * The shortest wait before the greeting of a client not proven or allow-listed: smtp-server's own
 * early-talker delay, moved here so trusted clients skip it. Botnets that pipeline blindly show up in it.
 */
const EARLY_TALKER_WAIT_MS = 100;

/** Sessions looked at per eviction: bounded work per newcomer, whatever the number of sessions. */
const EVICTION_SCAN = 2_048;

/** Allow-listed and proven senders: exempt from the concurrency limits, evicted only as a last resort. */
function isTrusted(live: LiveSession): boolean {
  return live.decision.label === 'pass:allow-list' || live.decision.label === 'pass:proven';
}

/**
 * Screened as anything but a plain pass: a verdict acted on, stored ("tarpit:cached") or only observed
 * ("observe:defer"). Its 4xx from Postfix are its own doing, not a sign of Postfix under pressure.
 */
function isSuspect(live: LiveSession): boolean {
  const label = live.decision.label;
  return label !== 'pass' && !label.startsWith('pass:');
}

function concurrencyLimits(policy: Policy): { perAddress: number; perPrefixV4: number; perPrefixV6: number } {
  return {
    perAddress: policy.server.maxSessionsPerAddress,
    perPrefixV4: policy.server.maxSessionsPerPrefixV4,
    perPrefixV6: policy.server.maxSessionsPerPrefixV6,
  };
}

const SPOOL_FULL: RelayReply = { code: 452, text: '4.3.1 Insufficient system storage, try again later' };
/** Postfix's default smtpd_hard_error_limit: error replies after which the session is closed. */
const HARD_ERROR_LIMIT = 20;
/** Holding this share of upstream.maxConnections, Postfix is near its process limit: the stress idle time-out applies. */
const UPSTREAM_STRESS_PERCENT = 80;
/** The reply to a command whose client left while the tarpit held it: nobody reads it. */
const CLIENT_GONE: RelayReply = { code: 421, text: '4.4.2 Error: connection closed' };
const INTERNAL_ERROR: RelayReply = { code: 451, text: '4.3.0 Internal error, try again later' };

/** Runs fn after ms (at once when 0); the timer does not keep the process alive. */
function later(ms: number, fn: () => void): void {
  if (ms <= 0) return fn();
  setTimeout(fn, ms).unref();
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
    xclientNotOffered: (upstream, required) => once(`xclient-not-offered-${required}`, () => (required
      ? logger.error({ upstream }, 'Postfix does not offer XCLIENT to the proxy, and upstream.xclient is required: mail is deferred with 451 until smtpd_authorized_xclient_hosts lists this proxy')
      : logger.warn({ upstream }, 'Postfix does not offer XCLIENT to the proxy, so it sees the proxy as the client: set smtpd_authorized_xclient_hosts'))),
    // Postfix's own reply is the reason: "550 5.7.0 Error: insufficient authorization" means this
    // proxy is not in smtpd_authorized_xclient_hosts, "501 5.5.4 Bad ADDR syntax" for an IPv6
    // client means a Postfix without IPv6 (inet_protocols). Each distinct reply is logged once.
    xclientRefused: (upstreamReply) => once(`xclient-refused-${upstreamReply.slice(0, 40)}`, () => logger.error(
      { upstreamReply },
      `Postfix refused XCLIENT: ${upstreamReply} (mail is deferred with 451 meanwhile)`,
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
