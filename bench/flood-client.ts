// The flood benchmark's SMTP clients: one complete session (legitimate or spam, optionally talking
// before the greeting) and one abandoned handshake, each from a chosen loopback source address,
// classified by what the client saw. test/support/smtp-dialog.ts has no connect timeout and hands
// out no socket until connected; here a connect stuck on a full listen queue must be cut at once
// at the end of its phase, so every socket, connected or not, lives in a SocketPool.
import net from 'node:net';

/** How a client saw its connection end; the columns of the report. */
export const OUTCOMES = ['accepted', 'noGreeting', 'reply421', 'rcpt4xx', 'other4xx', 'reject5xx', 'held', 'lost', 'cut'] as const;
export type Outcome = (typeof OUTCOMES)[number];

export interface SessionResult {
  outcome: Outcome;
  /** Wall clock (Date.now()) at connect, comparable with detection times and maildir mtimes. */
  startedAtMs: number;
  /** Connect to the 250 after the final dot; only for accepted messages. */
  latencyMs?: number;
  /** Milliseconds from each command (or connect) to its reply, by step: where a slow session waited. */
  stepMs?: Record<string, number>;
  /** A legitimate sender never seen before (the steady load's share of new clients). */
  fresh?: boolean;
}

export interface Endpoint {
  port: number;
  localAddress: string;
}

export interface MessagePlan {
  heloName: string;
  from: string;
  to: string;
  /** Header and body lines, without the final dot; each line must not start with ".". */
  lines: string[];
  /** Write EHLO right after connecting, before the greeting (postscreen's "pregreet"). */
  talkEarly?: boolean;
}

interface Reply {
  code: number;
  text: string;
}

type Wait = Reply | 'timeout' | 'closed' | 'aborted';

/** An idle connection cut by the window's end younger than this had no fair chance of a greeting. */
const YOUNG_AT_ABORT_MS = 1_000;

/** Every socket of a phase, so its end (or SIGINT) can close them all at once. */
export class SocketPool {
  private readonly sockets = new Set<net.Socket>();

  get size(): number {
    return this.sockets.size;
  }

  add(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  /** A reset, not a FIN: no TIME_WAIT on our side and the server's process is freed at once. */
  closeAll(): void {
    for (const socket of this.sockets) closeNow(socket);
  }
}

function closeNow(socket: net.Socket): void {
  // resetAndDestroy() waits for a pending connect to finish; destroy() abandons it.
  if (socket.connecting || socket.destroyed) socket.destroy();
  else socket.resetAndDestroy();
}

/** One connection's replies, parsed as they arrive; every wait is bounded and wakes on close or abort. */
class Connection {
  private buffered = '';
  private readonly replies: Reply[] = [];
  private wake: (() => void) | undefined;
  connected = false;
  closed = false;

  constructor(readonly socket: net.Socket, private readonly signal: AbortSignal) {
    socket.setNoDelay(true);
    socket.on('connect', () => { this.connected = true; this.notify(); });
    socket.on('data', (chunk: Buffer) => {
      this.buffered += chunk.toString('latin1');
      let match: RegExpExecArray | null;
      while ((match = /^(?:\d{3}-[^\n]*\n)*(\d{3})(?: [^\n]*)?\r?\n/.exec(this.buffered))) {
        this.replies.push({ code: Number(match[1]), text: match[0].trim() });
        this.buffered = this.buffered.slice(match[0].length);
      }
      this.notify();
    });
    const onAbort = (): void => this.notify();
    socket.on('close', () => {
      this.closed = true;
      signal.removeEventListener('abort', onAbort);
      this.notify();
    });
    socket.on('error', () => undefined);
    // The phase's signal has thousands of these at once (setMaxListeners(0) on it in flood.ts).
    signal.addEventListener('abort', onAbort, { once: true });
  }

  /** Resolves true once connected, false on failure, timeout or abort. */
  async connect(deadlineMs: number): Promise<boolean> {
    while (!this.connected) {
      if (this.closed || this.signal.aborted || performance.now() >= deadlineMs) return false;
      await this.pause(deadlineMs);
    }
    return true;
  }

  async reply(deadlineMs: number): Promise<Wait> {
    for (;;) {
      const next = this.replies.shift();
      if (next) return next;
      if (this.signal.aborted) return 'aborted';
      if (this.closed) return 'closed';
      if (performance.now() >= deadlineMs) return 'timeout';
      await this.pause(deadlineMs);
    }
  }

  write(text: string): void {
    if (!this.closed) this.socket.write(text);
  }

  /** Says QUIT and lets the server close first, so TIME_WAIT lands on its side, not on our source address. */
  async quit(): Promise<void> {
    this.write('QUIT\r\n');
    await this.reply(performance.now() + 2_000);
    if (!this.closed) await this.pause(performance.now() + 1_000);
    closeNow(this.socket);
  }

  private pause(deadlineMs: number): Promise<void> {
    return new Promise((resolve) => {
      // No timer for an unbounded wait: close or abort wakes it (setTimeout caps at 2^31 - 1 ms anyway).
      const timer = Number.isFinite(deadlineMs)
        ? setTimeout(() => { this.wake = undefined; resolve(); }, Math.max(1, deadlineMs - performance.now()))
        : undefined;
      this.wake = () => { clearTimeout(timer); this.wake = undefined; resolve(); };
    });
  }

  private notify(): void {
    this.wake?.();
  }
}

function open(endpoint: Endpoint, pool: SocketPool, signal: AbortSignal): Connection {
  const socket = net.connect({ host: '127.0.0.1', port: endpoint.port, localAddress: endpoint.localAddress });
  pool.add(socket);
  return new Connection(socket, signal);
}

function refusal(reply: Reply, step: string): Outcome {
  if (reply.code === 421) return 'reply421';
  if (reply.code >= 500) return 'reject5xx';
  if (reply.code >= 400) return step === 'RCPT' ? 'rcpt4xx' : 'other4xx';
  return 'lost';
}

/**
 * One complete session: greeting, EHLO, MAIL, RCPT, DATA, message, QUIT. Each reply is awaited
 * for at most `replyTimeoutMs` and the whole session ends by `deadlineMs` (performance.now()).
 */
export async function runSession(
  endpoint: Endpoint, plan: MessagePlan, limits: { replyTimeoutMs: number; deadlineMs: number }, pool: SocketPool, signal: AbortSignal,
): Promise<SessionResult> {
  const startedAtMs = Date.now();
  const started = performance.now();
  const connection = open(endpoint, pool, signal);
  const within = (): number => Math.min(performance.now() + limits.replyTimeoutMs, limits.deadlineMs);
  const end = (outcome: Outcome): SessionResult => {
    closeNow(connection.socket);
    return { outcome, startedAtMs };
  };
  if (!(await connection.connect(within()))) return end(signal.aborted ? 'cut' : 'noGreeting');
  if (plan.talkEarly) connection.write(`EHLO ${plan.heloName}\r\n`);
  const steps: Array<[step: string, line: string | undefined, expected: number]> = [
    ['GREETING', undefined, 220],
    ['EHLO', plan.talkEarly ? undefined : `EHLO ${plan.heloName}`, 250],
    ['MAIL', `MAIL FROM:<${plan.from}>`, 250],
    ['RCPT', `RCPT TO:<${plan.to}>`, 250],
    ['DATA', 'DATA', 354],
    ['DOT', `${plan.lines.join('\r\n')}\r\n.`, 250],
  ];
  const stepMs: Record<string, number> = {};
  let stepStarted = started;
  for (const [step, line, expected] of steps) {
    if (line !== undefined) connection.write(`${line}\r\n`);
    const reply = await connection.reply(within());
    stepMs[step] = Math.round(performance.now() - stepStarted);
    stepStarted = performance.now();
    if (reply === 'aborted') return end('cut');
    if (typeof reply === 'string') return end(step === 'GREETING' ? 'noGreeting' : 'lost');
    if (reply.code !== expected) {
      connection.write('QUIT\r\n');
      return end(refusal(reply, step));
    }
  }
  const latencyMs = performance.now() - started;
  await connection.quit();
  return { outcome: 'accepted', startedAtMs, latencyMs, stepMs };
}

/**
 * An abandoned handshake: connect, take the greeting if it comes, say nothing, and hold the
 * connection until the server hangs up (a 421 on the way counts as pushback) or `signal` aborts.
 */
export async function holdIdle(endpoint: Endpoint, pool: SocketPool, signal: AbortSignal, hooks?: HoldHooks): Promise<SessionResult> {
  return hold(endpoint, pool, signal, [], hooks);
}

/** Told when a held connection got its greeting and when it ended: how many one attacker holds at once. */
export interface HoldHooks {
  greeted(): void;
  ended(): void;
}

/**
 * A half-open transaction: greeting, EHLO, MAIL, RCPT, then silence with the transaction open (each such
 * connection holds a Postfix smtpd process), until the server hangs up or `signal` aborts.
 */
export async function holdHalfOpen(endpoint: Endpoint, plan: Pick<MessagePlan, 'heloName' | 'from' | 'to'>, pool: SocketPool, signal: AbortSignal): Promise<SessionResult> {
  return hold(endpoint, pool, signal, [`EHLO ${plan.heloName}`, `MAIL FROM:<${plan.from}>`, `RCPT TO:<${plan.to}>`]);
}

async function hold(endpoint: Endpoint, pool: SocketPool, signal: AbortSignal, commands: readonly string[], hooks?: HoldHooks): Promise<SessionResult> {
  const startedAtMs = Date.now();
  const connection = open(endpoint, pool, signal);
  let greeted = false;
  let outcome: Outcome | undefined;
  const pending = [...commands];
  if (await connection.connect(Number.POSITIVE_INFINITY)) {
    while (outcome === undefined) {
      const reply = await connection.reply(Number.POSITIVE_INFINITY);
      if (typeof reply !== 'string') {
        if (reply.code === 220 && !greeted) {
          greeted = true;
          hooks?.greeted();
        }
        if (reply.code < 400) {
          const next = pending.shift();
          if (next !== undefined) connection.write(`${next}\r\n`);
        } else outcome = refusal(reply, greeted ? (pending.length < commands.length ? 'RCPT' : 'IDLE') : 'GREETING');
      } else if (reply === 'closed') {
        outcome = greeted ? 'lost' : 'noGreeting';
      } else {
        outcome = greeted ? 'held' : 'noGreeting';
      }
    }
  }
  closeNow(connection.socket);
  if (greeted) hooks?.ended();
  // Opened just before the window closed: too young to say the greeting never came.
  const young = Date.now() - startedAtMs < YOUNG_AT_ABORT_MS;
  return { outcome: outcome === undefined || outcome === 'noGreeting' ? (signal.aborted && young ? 'cut' : 'noGreeting') : outcome, startedAtMs };
}
