// A raw SMTP client for tests that need byte-level control: early talking, pipelining, dropping
// mid-DATA, dripping. Every wait is bounded.
import net from 'node:net';

export interface Reply {
  code: number;
  text: string;
}

export class SmtpDialog {
  private buffered = '';
  private readonly replies: Reply[] = [];
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered += chunk.toString('latin1');
      let match: RegExpExecArray | null;
      // A complete reply ends with a line "ddd text" (space after the code).
      while ((match = /^((?:\d{3}-[^\n]*\n)*)(\d{3})(?: ([^\n]*))?\r?\n/.exec(this.buffered))) {
        const lines = `${match[1]}${match[2]} ${match[3] ?? ''}`.split(/\r?\n/).map((line) => line.slice(4));
        this.replies.push({ code: Number(match[2]), text: lines.join('\n').trim() });
        this.buffered = this.buffered.slice(match[0].length);
      }
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static connect(port: number, options: { localAddress?: string; host?: string } = {}): Promise<SmtpDialog> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: options.host ?? '127.0.0.1', localAddress: options.localAddress });
      socket.once('connect', () => resolve(new SmtpDialog(socket)));
      socket.once('error', reject);
    });
  }

  /** The next reply, or an error if none comes within timeoutMs (or the connection closed). */
  async reply(timeoutMs = 5_000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length === 0) {
      if (this.closed) throw new Error('connection closed without a reply');
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no reply within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.replies.shift() as Reply;
  }

  async command(line: string, timeoutMs?: number): Promise<Reply> {
    this.write(`${line}\r\n`);
    return this.reply(timeoutMs);
  }

  write(data: string | Buffer): void {
    if (!this.closed) this.socket.write(data);
  }

  /** Waits until the server closes the connection, bounded. */
  async closedByServer(timeoutMs = 5_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    return this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }
}
