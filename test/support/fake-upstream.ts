// A scriptable stand-in for Postfix, for integration tests of the relay: it speaks enough SMTP
// (EHLO, XCLIENT, MAIL, RCPT, DATA, RSET, QUIT) to record exactly what the proxy sent, and can
// reject recipients, answer 4xx, stall (never answer) or drop the connection at any step.
import net from 'node:net';

export type UpstreamStep = 'greeting' | 'ehlo' | 'xclient' | 'mail' | 'rcpt' | 'data' | 'dot';

export interface FakeUpstreamOptions {
  xclient?: boolean;
  /** The attributes its EHLO offers after XCLIENT; Postfix 3.7 offers REVERSE_NAME and more. */
  xclientAttributes?: string;
  /** Recipient address -> full reply line, e.g. "550 5.1.1 <x@y>: Recipient address rejected". */
  recipientReplies?: Record<string, string>;
  /** The reply to every recipient not in recipientReplies; default 250 2.1.5 Ok. */
  otherRecipientsReply?: string;
  mailReply?: string;
  dotReply?: string;
  stallAt?: UpstreamStep;
  dropAt?: UpstreamStep;
  /** Pause reading during DATA for this long per chunk (to exercise backpressure). */
  slowDataMs?: number;
  /** Hang up, without a word, on the RCPT after this many RCPTs of a connection (Postfix gone mid-session). */
  hangUpAfterRcpts?: number;
}

export interface ReceivedMessage {
  helo: string;
  xclient: string | undefined;
  mailFrom: string;
  rcptTo: string[];
  /** The message as Postfix would store it: dot-stuffing removed. */
  body: Buffer;
  queueId: string;
}

export class FakeUpstream {
  readonly messages: ReceivedMessage[] = [];
  readonly commands: string[] = [];
  connectionsOpened = 0;
  connectionsOpen = 0;
  /** Connections that closed while a message was still being sent (nothing delivered). */
  abortedData = 0;
  /** Messages whose final dot arrived, answered or not (stallAt: 'dot'). */
  dataEnded = 0;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private queueCounter = 0;

  private constructor(public options: FakeUpstreamOptions) {
    this.server = net.createServer((socket) => this.session(socket));
  }

  static async start(options: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
    const upstream = new FakeUpstream(options);
    await new Promise<void>((resolve) => upstream.server.listen(0, '127.0.0.1', resolve));
    return upstream;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Waits until no connection is open (the proxy quit or dropped them), bounded in time. */
  async waitForIdle(timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.connectionsOpen > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  }

  private session(socket: net.Socket): void {
    this.connectionsOpened += 1;
    this.connectionsOpen += 1;
    this.sockets.add(socket);
    let buffered = '';
    let inData = false;
    let dataChunks: string[] = [];
    let dataTail = '\r\n';
    let transaction: Omit<ReceivedMessage, 'body' | 'queueId'> = { helo: '', xclient: undefined, mailFrom: '', rcptTo: [] };
    let helo = '';
    let xclient: string | undefined;
    let closed = false;
    let rcpts = 0;
    socket.on('close', () => {
      closed = true;
      if (inData) this.abortedData += 1;
      this.connectionsOpen -= 1;
      this.sockets.delete(socket);
    });
    socket.on('error', () => undefined);

    const answer = (step: UpstreamStep, line: string): void => {
      if (this.options.stallAt === step) return;
      if (this.options.dropAt === step) {
        socket.destroy();
        return;
      }
      if (!closed) socket.write(`${line}\r\n`);
    };

    const onLine = (line: string): void => {
      this.commands.push(line);
      const verb = line.slice(0, 4).toUpperCase();
      if (verb === 'EHLO' || verb === 'HELO') {
        helo = line.slice(5);
        const features = ['250-fake.upstream', '250-PIPELINING', '250-SIZE 52428800', '250-8BITMIME', '250-DSN', '250-SMTPUTF8'];
        if (this.options.xclient !== false && xclient === undefined) features.push(`250-XCLIENT ${this.options.xclientAttributes ?? 'NAME ADDR PORT PROTO HELO LOGIN'}`);
        features.push('250 ENHANCEDSTATUSCODES');
        answer('ehlo', features.join('\r\n'));
      } else if (verb === 'XCLI') {
        xclient = line.slice(8);
        answer('xclient', '220 fake.upstream ESMTP');
      } else if (verb === 'MAIL') {
        transaction = { helo, xclient, mailFrom: /<([^>]*)>/.exec(line)?.[1] ?? '', rcptTo: [] };
        answer('mail', this.options.mailReply ?? '250 2.1.0 Ok');
      } else if (verb === 'RCPT') {
        rcpts += 1;
        if (this.options.hangUpAfterRcpts !== undefined && rcpts > this.options.hangUpAfterRcpts) {
          socket.destroy();
          return;
        }
        const address = /<([^>]*)>/.exec(line)?.[1] ?? '';
        const reply = this.options.recipientReplies?.[address] ?? this.options.otherRecipientsReply ?? '250 2.1.5 Ok';
        if (reply.startsWith('2')) transaction.rcptTo.push(address);
        answer('rcpt', reply);
      } else if (verb === 'DATA') {
        if (this.options.stallAt === 'data' || this.options.dropAt === 'data') return answer('data', '');
        inData = true;
        dataChunks = [];
        dataTail = '\r\n';
        answer('data', '354 End data with <CR><LF>.<CR><LF>');
      } else if (verb === 'RSET') {
        answer('mail', '250 2.0.0 Ok');
      } else if (verb === 'QUIT') {
        socket.end('221 2.0.0 Bye\r\n');
      } else if (verb === 'NOOP') {
        socket.write('250 2.0.0 Ok\r\n');
      } else {
        socket.write('502 5.5.2 Error: command not recognized\r\n');
      }
    };

    const onDataEnd = (raw: string): void => {
      inData = false;
      this.dataEnded += 1;
      // Undo dot-stuffing exactly as Postfix does: a leading dot on any line is removed.
      const body = Buffer.from(raw.replace(/(^|\n)\./g, '$1'), 'latin1');
      this.queueCounter += 1;
      const queueId = `FAKE${this.queueCounter}`;
      if (this.options.stallAt === 'dot' || this.options.dropAt === 'dot') return answer('dot', '');
      this.messages.push({ ...transaction, body, queueId });
      answer('dot', this.options.dotReply ?? `250 2.0.0 Ok: queued as ${queueId}`);
    };

    socket.on('data', (chunk: Buffer) => {
      if (this.options.slowDataMs && inData) {
        socket.pause();
        setTimeout(() => socket.resume(), this.options.slowDataMs);
      }
      buffered += chunk.toString('latin1');
      for (;;) {
        if (inData) {
          // Search only the new bytes plus the last four seen, so a 20 MB message stays linear.
          // dataTail starts as a CRLF that is not content, so a message of just "." is found.
          const window = dataTail + buffered;
          const found = window.indexOf('\r\n.\r\n');
          if (found === -1) {
            dataChunks.push(buffered);
            dataTail = window.slice(-4);
            buffered = '';
            return;
          }
          const keep = found + 2 - dataTail.length; // content bytes of `buffered`; negative: trim stored content
          let content = dataChunks.join('') + buffered.slice(0, Math.max(keep, 0));
          if (keep < 0) content = content.slice(0, content.length + keep);
          buffered = window.slice(found + 5);
          dataChunks = [];
          onDataEnd(content);
          continue;
        }
        const newline = buffered.indexOf('\r\n');
        if (newline === -1) return;
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 2);
        onLine(line);
      }
    });
    answer('greeting', '220 fake.upstream ESMTP');
  }
}
