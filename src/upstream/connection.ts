// One SMTP client connection to Postfix, driven one command at a time. It exists because the relay
// must hand each of Postfix's replies to our client as it comes (MAIL, each RCPT, DATA) and stream
// DATA with backpressure; nodemailer's client sends a whole message per call and has no XCLIENT.
// Every wait has a timeout; after a timeout or a protocol error the connection is destroyed,
// because the reply stream can no longer be trusted to line up with our commands.
import net from 'node:net';
import type { Readable } from 'node:stream';
import { DotStuffer } from './dot-stuffer.js';
import { ReplyParser, ReplyProtocolError, parseCapabilities, type SmtpReply } from './reply.js';
import { xclientCommand, type ClientIdentity } from './xclient.js';

export interface UpstreamTimeouts {
  connectTimeoutMs: number;
  replyTimeoutMs: number;
  dataStallTimeoutMs: number;
  dataDoneTimeoutMs: number;
}

export interface UpstreamOptions extends UpstreamTimeouts {
  host: string;
  port: number;
  heloName: string;
  xclient: 'auto' | 'required' | 'off';
  /**
   * Told how long each reply took, by step, and its code (metrics, and the back-pressure detector);
   * a timeout is told as its full wait with no code.
   */
  observeReply?: (step: string, milliseconds: number, code: number | undefined) => void;
  /** Told Postfix's EHLO keywords at each opening, so the listener advertises what Postfix offers. */
  observeCapabilities?: (capabilities: ReadonlyMap<string, string>) => void;
}

export type UpstreamFailure = 'connect' | 'timeout' | 'closed' | 'protocol' | 'refused';

/** A failure of the upstream path itself (not a reply): our client gets a 4xx for it. */
export class UpstreamError extends Error {
  constructor(readonly failure: UpstreamFailure, readonly step: string, message: string) {
    super(`${step}: ${message}`);
  }
}

interface PendingReply {
  step: string;
  resolve: (reply: SmtpReply) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

export interface OpenedUpstream {
  connection: UpstreamConnection;
  /** The reply that ends the opening (220 after XCLIENT, or 250 to EHLO); a 4xx/5xx means Postfix refused. */
  reply: SmtpReply;
  xclientSent: boolean;
  connectMs: number;
}

export class UpstreamConnection {
  capabilities = new Map<string, string>();
  private readonly parser = new ReplyParser();
  private readonly pending: PendingReply[] = [];
  private failure: UpstreamError | undefined;

  private constructor(private readonly socket: net.Socket, private readonly options: UpstreamOptions) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) => this.fail(new UpstreamError('closed', this.currentStep(), error.message)));
    socket.on('close', () => this.fail(new UpstreamError('closed', this.currentStep(), 'connection closed by upstream')));
  }

  /**
   * Connects, reads the greeting, says EHLO and, where Postfix offers it (and policy allows),
   * hands over the real client with XCLIENT followed by a second EHLO.
   */
  static async open(options: UpstreamOptions, client: ClientIdentity): Promise<OpenedUpstream> {
    const started = performance.now();
    const { connection, greeting } = await UpstreamConnection.connect(options);
    try {
      if (greeting.code !== 220) return connection.refusedOpening(greeting, false, started);
      let reply = await connection.hello();
      if (reply.code !== 250) return connection.refusedOpening(reply, false, started);
      options.observeCapabilities?.(connection.capabilities);

      const xclient = connection.capabilities.get('XCLIENT');
      if (options.xclient === 'off' || (xclient === undefined && options.xclient === 'auto')) {
        return { connection, reply, xclientSent: false, connectMs: performance.now() - started };
      }
      if (xclient === undefined) {
        connection.destroy();
        throw new UpstreamError('refused', 'xclient', 'upstream does not offer XCLIENT (policy upstream.xclient is "required")');
      }
      reply = await connection.command(xclientCommand(client, xclient), 'xclient');
      if (reply.code !== 220) return connection.refusedOpening(reply, true, started);
      // Postfix takes the HELO name and the protocol from the HELO/EHLO after XCLIENT (it overrides
      // XCLIENT HELO and PROTO), so that command is the client's own: its name, and HELO for a client
      // that said HELO, or Postfix's Received line and smtpd_helo_restrictions would see ESMTP.
      reply = await connection.hello(client.helo, client.protocol === 'SMTP' ? 'HELO' : 'EHLO');
      if (reply.code !== 250) return connection.refusedOpening(reply, true, started);
      return { connection, reply, xclientSent: true, connectMs: performance.now() - started };
    } catch (error) {
      connection.destroy();
      throw error;
    }
  }

  /**
   * Connects and reads the greeting, nothing more: open() for the relay, and `check-upstream`, which
   * takes each step of the opening on its own to report it. The connection is destroyed on a failure.
   */
  static async connect(options: UpstreamOptions): Promise<{ connection: UpstreamConnection; greeting: SmtpReply }> {
    const socket = await connectSocket(options);
    const connection = new UpstreamConnection(socket, options);
    try {
      return { connection, greeting: await connection.expectReply('greeting', options.replyTimeoutMs) };
    } catch (error) {
      connection.destroy();
      throw error;
    }
  }

  get usable(): boolean {
    return this.failure === undefined && !this.socket.destroyed;
  }

  /**
   * Sends one command line and waits for its reply. A Buffer goes out byte for byte (a client's
   * envelope as it sent it); a string as UTF-8.
   */
  command(line: string | Buffer, step: string, timeoutMs = this.options.replyTimeoutMs): Promise<SmtpReply> {
    const reply = this.expectReply(step, timeoutMs);
    this.write(typeof line === 'string' ? `${line}\r\n` : Buffer.concat([line, CRLF]));
    return reply;
  }

  /** Sends several commands in one write (RFC 2920 pipelining) and waits for all their replies. */
  pipeline(commands: ReadonlyArray<{ line: string | Buffer; step: string }>): Promise<SmtpReply[]> {
    const replies = commands.map(({ step }) => this.expectReply(step, this.options.replyTimeoutMs));
    this.write(Buffer.concat(commands.flatMap(({ line }) => [typeof line === 'string' ? Buffer.from(line) : line, CRLF])));
    return Promise.all(replies);
  }

  /**
   * DATA with the message streamed from `message` (unstuffed bytes, as smtp-server gives them).
   * Returns Postfix's reply to DATA when it is not 354, else its reply to the final dot.
   * If the message stream breaks (client gone), Postfix stalls, or `abortReason` names a reason
   * (message over the size limit), the connection is destroyed WITHOUT the final dot, so Postfix
   * discards the partial message. The promise settles only once the message stream is over, so
   * our client is never answered while it is still sending.
   */
  async data(message: Readable, abortReason: () => string | undefined): Promise<SmtpReply> {
    const start = await this.command('DATA', 'data');
    if (start.code !== 354) return start;
    if (message.destroyed && !message.readableEnded) {
      // The client went away while Postfix was answering DATA: its stream's 'close' has come and gone.
      this.destroy();
      throw new UpstreamError('refused', 'data', 'client went away during DATA');
    }
    const stuffer = new DotStuffer();
    // Chunks written in one turn of the event loop go out in one write, and so do the last chunk and
    // the final dot (the stream's 'end' comes before the next turn): one syscall less per message.
    let corked = false;
    const uncork = (): void => {
      if (!corked) return;
      corked = false;
      this.socket.uncork();
    };
    await new Promise<void>((resolve, reject) => {
      let abort: Error | undefined;
      const stop = (error: Error): void => {
        if (abort) return;
        abort = error;
        this.destroy();
        message.resume(); // keep reading: smtp-server answers only after the client's final dot
      };
      message.on('data', (chunk: Buffer) => {
        if (abort) return;
        const reason = abortReason();
        if (reason) return stop(new UpstreamError('refused', 'data', reason));
        if (!this.usable) return stop(this.failure ?? new UpstreamError('closed', 'data', 'upstream went away'));
        if (!corked) {
          corked = true;
          this.socket.cork();
          setImmediate(uncork);
        }
        if (!this.socket.write(stuffer.push(chunk))) {
          message.pause();
          this.drained().then(() => {
            if (!abort) message.resume();
          }, stop);
        }
      });
      message.once('end', () => {
        const reason = abortReason();
        if (!abort && reason) stop(new UpstreamError('refused', 'data', reason));
        if (abort) reject(abort);
        else resolve();
      });
      message.once('close', () => {
        if (message.readableEnded) return;
        stop(new UpstreamError('refused', 'data', 'client went away during DATA'));
        reject(abort);
      });
      message.on('error', () => undefined); // reported through 'close'; an unhandled 'error' would crash
    });
    const reply = this.expectReply('dot', this.options.dataDoneTimeoutMs);
    this.write(stuffer.terminator());
    uncork();
    return reply;
  }

  /** Polite close: QUIT, then the socket goes whatever Postfix answers (or after a short wait). */
  quit(): void {
    if (!this.usable) {
      this.destroy();
      return;
    }
    this.command('QUIT', 'quit', Math.min(this.options.replyTimeoutMs, 2_000)).then(
      () => this.socket.end(),
      () => this.destroy(),
    );
  }

  destroy(): void {
    this.fail(new UpstreamError('closed', this.currentStep(), 'connection closed by proxy'));
    this.socket.destroy();
  }

  /** The address this end of the connection has: the client address Postfix sees without XCLIENT. */
  get localAddress(): string | undefined {
    return this.socket.localAddress;
  }

  /**
   * EHLO (HELO when Postfix refuses it). The capabilities come from an EHLO: a HELO after XCLIENT
   * (for a HELO client) keeps those of the proxy's own EHLO before it, which are Postfix's all the same.
   */
  async hello(name = this.options.heloName, verb: 'EHLO' | 'HELO' = 'EHLO'): Promise<SmtpReply> {
    if (verb === 'HELO') return this.command(`HELO ${name}`, 'helo');
    let reply = await this.command(`EHLO ${name}`, 'ehlo');
    if (reply.code >= 500) reply = await this.command(`HELO ${name}`, 'helo');
    this.capabilities = reply.code === 250 ? parseCapabilities(reply) : new Map();
    return reply;
  }

  private refusedOpening(reply: SmtpReply, xclientSent: boolean, started: number): OpenedUpstream {
    this.quit();
    return { connection: this, reply, xclientSent, connectMs: performance.now() - started };
  }

  private expectReply(step: string, timeoutMs: number): Promise<SmtpReply> {
    if (this.failure) return Promise.reject(this.failure);
    const sentAt = performance.now();
    const observe = this.options.observeReply;
    return new Promise<SmtpReply>((resolve, reject) => {
      const entry: PendingReply = {
        step,
        resolve: observe
          ? (reply) => {
              observe(step, performance.now() - sentAt, reply.code);
              resolve(reply);
            }
          : resolve,
        reject,
        timer: setTimeout(() => {
          observe?.(step, timeoutMs, undefined);
          this.fail(new UpstreamError('timeout', step, `no reply within ${timeoutMs} ms`));
          this.socket.destroy();
        }, timeoutMs),
      };
      this.pending.push(entry);
    });
  }

  private drained(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        const error = new UpstreamError('timeout', 'data', `upstream took no data for ${this.options.dataStallTimeoutMs} ms`);
        this.fail(error);
        reject(error);
      }, this.options.dataStallTimeoutMs);
      const onDrain = (): void => {
        cleanup();
        resolve();
      };
      const onClose = (): void => {
        cleanup();
        reject(this.failure ?? new UpstreamError('closed', 'data', 'connection closed by upstream'));
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        this.socket.off('drain', onDrain);
        this.socket.off('close', onClose);
      };
      this.socket.on('drain', onDrain);
      this.socket.on('close', onClose);
    });
  }

  private write(data: string | Buffer): void {
    if (this.usable) this.socket.write(data);
  }

  private onData(chunk: Buffer): void {
    let replies: SmtpReply[];
    try {
      replies = this.parser.feed(chunk);
    } catch (error) {
      const message = error instanceof ReplyProtocolError ? error.message : String(error);
      this.fail(new UpstreamError('protocol', this.currentStep(), message));
      this.socket.destroy();
      return;
    }
    for (const reply of replies) {
      const waiter = this.pending.shift();
      if (!waiter) {
        // A reply nobody asked for (e.g. a 421 before shutdown): the dialogue is out of step.
        this.fail(new UpstreamError(reply.code === 421 ? 'closed' : 'protocol', 'idle', `unexpected reply ${reply.code}`));
        this.socket.destroy();
        return;
      }
      clearTimeout(waiter.timer);
      waiter.resolve(reply);
    }
  }

  private fail(error: UpstreamError): void {
    if (!this.failure) this.failure = error;
    for (const waiter of this.pending.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(this.failure);
    }
  }

  private currentStep(): string {
    return this.pending[0]?.step ?? 'idle';
  }
}

const CRLF = Buffer.from('\r\n');

function connectSocket(options: UpstreamOptions): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const socket = net.connect({ host: options.host, port: options.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new UpstreamError('connect', 'connect', `no connection within ${options.connectTimeoutMs} ms`));
    }, options.connectTimeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(new UpstreamError('connect', 'connect', error.message));
    });
  });
}
