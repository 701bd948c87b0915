// The relay stage of one client session: one lazily opened upstream connection to Postfix, used
// for every transaction of the session, like Postfix's own before-queue smtpd_proxy_filter.
// Each method returns the reply our client gets: Postfix's own code and text when Postfix
// answered, a 4xx of ours when the path to Postfix failed (so the client retries; never a 250).
import type { Readable } from 'node:stream';
import { UpstreamConnection, UpstreamError, type UpstreamOptions } from '../upstream/connection.js';
import { isPositive, replyText, type SmtpReply } from '../upstream/reply.js';
import { formatParameters, type EsmtpParameter } from '../smtp/envelope-command.js';
import type { ClientIdentity } from '../upstream/xclient.js';

export interface RelayReply {
  code: number;
  /** Reply text, starting with the enhanced status code where there is one. */
  text: string;
  /** Set when the reply is ours because the upstream path failed, not Postfix's. */
  failure?: string;
}

/** Where the relay reports set-up faults; the listener logs each kind once per process, not per session. */
export interface RelayNotices {
  /** required: the mail is deferred (upstream.xclient: required); else relayed as the proxy. */
  xclientNotOffered(upstream: string, required: boolean): void;
  xclientRefused(upstreamReply: string): void;
}

/** The EHLO keyword Postfix must show for each parameter we pass on; others are not passed. */
const PARAMETER_CAPABILITY: ReadonlyMap<string, string> = new Map([
  ['SIZE', 'SIZE'],
  ['BODY', '8BITMIME'],
  ['SMTPUTF8', 'SMTPUTF8'],
  ['RET', 'DSN'],
  ['ENVID', 'DSN'],
  ['NOTIFY', 'DSN'],
  ['ORCPT', 'DSN'],
]);

export class SessionRelay {
  private upstream: UpstreamConnection | undefined;
  /** The identity the upstream connection was opened (and XCLIENT'd) for. */
  private upstreamIdentity = '';
  private transactionOpen = false;
  /** The message of the transaction under way, until Postfix's final reply (or the path failed). */
  private dataInFlight: Promise<void> | undefined;
  /** The client session is over: nothing more may be opened or sent upstream. */
  private closed = false;
  upstreamConnectMs: number | undefined;
  xclientSent = false;
  /** Upstream connections opened for this session: each EHLO with a new name opens one; bounded. */
  private opens = 0;

  constructor(private readonly options: UpstreamOptions, private readonly notices: RelayNotices) {}

  /**
   * sender and recipient paths are latin1 strings of the client's bytes (envelope-command.ts), sent
   * back out byte for byte; parameters keep the client's xtext.
   */
  async mailFrom(client: ClientIdentity, sender: string, parameters: readonly EsmtpParameter[]): Promise<RelayReply> {
    if (this.closed) return localFailure('mail', 'client session over');
    const identity = `${client.address}|${client.port}|${client.protocol ?? ''}|${client.helo ?? ''}|${client.hostname ?? ''}`;
    if (!this.upstream?.usable || identity !== this.upstreamIdentity) {
      // A client that changes its EHLO name before each MAIL would have Postfix fork a session each time.
      if (this.opens >= MAX_UPSTREAM_OPENS_PER_SESSION) {
        return { code: 421, text: '4.7.0 Error: too many new sessions with the mail server on one connection', failure: 'limit: upstream connections opened for this session' };
      }
      this.opens += 1;
      const refusal = await this.openUpstream(client);
      if (refusal) return refusal;
      this.upstreamIdentity = identity;
    }
    const upstream = this.upstream as UpstreamConnection;
    const line = Buffer.from(`MAIL FROM:<${sender}>${offeredParameters(parameters, upstream.capabilities)}`, 'latin1');
    try {
      let reply: SmtpReply;
      if (this.transactionOpen) {
        // The client reset (RSET, EHLO) or abandoned the last transaction; resynchronise in one round trip.
        const [, mailReply] = await upstream.pipeline([{ line: 'RSET', step: 'rset' }, { line, step: 'mail' }]);
        reply = mailReply as SmtpReply;
      } else {
        reply = await upstream.command(line, 'mail');
      }
      this.transactionOpen = isPositive(reply);
      return fromUpstream(reply);
    } catch (error) {
      return this.pathFailure(error, 'mail');
    }
  }

  async rcptTo(recipient: string, parameters: readonly EsmtpParameter[]): Promise<RelayReply> {
    const upstream = this.upstream;
    if (!upstream?.usable) return localFailure('rcpt', 'upstream connection lost');
    const line = Buffer.from(`RCPT TO:<${recipient}>${offeredParameters(parameters, upstream.capabilities)}`, 'latin1');
    try {
      return fromUpstream(await upstream.command(line, 'rcpt'));
    } catch (error) {
      return this.pathFailure(error, 'rcpt');
    }
  }

  /**
   * Streams the message. `abortReason` is asked before each chunk; a reason (size limit) drops the
   * upstream connection without the final dot. Settles only after the client's message is over.
   */
  async data(message: Readable, abortReason: () => string | undefined): Promise<RelayReply> {
    const upstream = this.upstream;
    if (!upstream?.usable) return localFailure('data', 'upstream connection lost');
    this.transactionOpen = false;
    const reply = upstream.data(message, abortReason).then(fromUpstream, (error: unknown) => this.pathFailure(error, 'data'));
    const settled = reply.then(() => undefined, () => undefined);
    this.dataInFlight = settled;
    void settled.then(() => {
      if (this.dataInFlight === settled) this.dataInFlight = undefined;
    });
    return reply;
  }

  /**
   * Drops the open upstream transaction (its message went to the quarantine instead): RSET now,
   * without waiting; the next command queues behind its reply.
   */
  resetTransaction(): void {
    if (!this.transactionOpen || !this.upstream?.usable) return;
    this.transactionOpen = false;
    const upstream = this.upstream;
    upstream.command('RSET', 'rset').then((reply) => {
      if (reply.code !== 250) upstream.destroy();
    }, () => upstream.destroy());
  }

  /** An upstream connection is open (or opening) for this session. */
  get holdsUpstream(): boolean {
    return this.upstream?.usable === true;
  }

  /**
   * Lets the upstream connection go between transactions (a tarpitted session, whose next MAIL waits out its
   * delay first): QUIT once any message's final reply is in; the next MAIL opens a new one.
   */
  releaseUpstream(): void {
    const upstream = this.upstream;
    if (!upstream) return;
    this.upstream = undefined;
    this.upstreamIdentity = '';
    this.transactionOpen = false;
    if (this.dataInFlight) void this.dataInFlight.then(() => upstream.quit());
    else upstream.quit();
  }

  /**
   * End of the client session: QUIT upstream if we still have it. A message whose final dot came
   * is Postfix's to answer first, even if the client left right after the dot (Postfix itself keeps
   * a message whose dot it read from a client that then vanished); its reply comes before the QUIT.
   * A message still streaming is not: data() drops the connection without the dot.
   */
  close(): void {
    this.closed = true;
    const upstream = this.upstream;
    this.upstream = undefined;
    if (!upstream) return;
    if (this.dataInFlight) void this.dataInFlight.then(() => upstream.quit());
    else upstream.quit();
  }

  private async openUpstream(client: ClientIdentity): Promise<RelayReply | undefined> {
    this.upstream?.quit();
    this.upstream = undefined;
    this.transactionOpen = false;
    try {
      const opened = await UpstreamConnection.open(this.options, client);
      if (this.closed) {
        // The client left while we connected: do not leave Postfix an smtpd holding this connection.
        opened.connection.quit();
        return localFailure('connect', 'client session over');
      }
      this.upstreamConnectMs = Math.round(opened.connectMs);
      this.xclientSent = opened.xclientSent;
      if (opened.reply.code >= 400) {
        // A 5xx to XCLIENT is "insufficient authorization": a set-up fault, not the client's. A 4xx
        // (e.g. 421 from Postfix's connection rate limit for the handed-over client) is Postfix's
        // own word on this client and goes to it unchanged.
        if (opened.xclientSent && opened.reply.code >= 500) {
          this.notices.xclientRefused(`${opened.reply.code} ${replyText(opened.reply)}`);
          return localFailure('xclient', `upstream refused XCLIENT (${opened.reply.code})`);
        }
        return fromUpstream(opened.reply);
      }
      if (!opened.xclientSent && this.options.xclient === 'auto') {
        this.notices.xclientNotOffered(`${this.options.host}:${this.options.port}`, false);
      }
      this.upstream = opened.connection;
      return undefined;
    } catch (error) {
      if (error instanceof UpstreamError && error.step === 'xclient') this.notices.xclientNotOffered(`${this.options.host}:${this.options.port}`, true);
      return this.pathFailure(error, 'connect');
    }
  }

  private pathFailure(error: unknown, step: string): RelayReply {
    this.upstream?.destroy();
    this.upstream = undefined;
    this.transactionOpen = false;
    if (error instanceof UpstreamError) return localFailure(step, error.message, error.failure);
    throw error;
  }
}

/** New upstream connections one client session may cause (one per EHLO name it changes to before MAIL). */
export const MAX_UPSTREAM_OPENS_PER_SESSION = 10;

function fromUpstream(reply: SmtpReply): RelayReply {
  return { code: reply.code, text: replyText(reply) };
}

function localFailure(step: string, reason: string, failure = 'closed'): RelayReply {
  const text = step === 'data'
    ? '4.4.2 Mail server connection failed during the message; not accepted, try again later'
    : '4.4.1 Mail server temporarily unavailable, try again later';
  return { code: 451, text, failure: `${failure}: ${reason}` };
}

/** The parameters Postfix offers the extension of, as the client sent them. */
function offeredParameters(parameters: readonly EsmtpParameter[], capabilities: ReadonlyMap<string, string>): string {
  return formatParameters(parameters.filter(({ keyword }) => {
    const capability = PARAMETER_CAPABILITY.get(keyword);
    return capability !== undefined && capabilities.has(capability);
  }));
}
