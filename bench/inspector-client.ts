// A minimal Chrome DevTools Protocol client for a child started with --inspect=HOST:PORT, over a
// hand-rolled WebSocket (Node 20 has no WebSocket client without a flag, and the benchmarks add no
// dependency). Enough for the heap measurements of bench:idle: HeapProfiler.collectGarbage (a full
// GC in the child, without --expose-gc) and the sampling heap profiler. Text frames only; every
// wait is bounded.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';

const OPCODE_CONTINUATION = 0x0;
const OPCODE_TEXT = 0x1;
const OPCODE_CLOSE = 0x8;
const OPCODE_PING = 0x9;
const OPCODE_PONG = 0xa;

interface Pending {
  resolve(result: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

export class InspectorSession {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private received: Buffer = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      for (const [id, pending] of this.pending) {
        clearTimeout(pending.timer);
        pending.reject(new Error('inspector connection closed'));
        this.pending.delete(id);
      }
    });
  }

  /** Connects to the first target of the inspector listening on 127.0.0.1:port. */
  static async connect(port: number, timeoutMs = 5_000): Promise<InspectorSession> {
    const response = await fetch(`http://127.0.0.1:${port}/json/list`, { signal: AbortSignal.timeout(timeoutMs) });
    const targets = (await response.json()) as Array<{ webSocketDebuggerUrl?: string }>;
    const address = targets.find((target) => target.webSocketDebuggerUrl)?.webSocketDebuggerUrl;
    if (!address) throw new Error(`inspector on port ${port} lists no target`);
    const url = new URL(address);
    const socket = await new Promise<Socket>((resolve, reject) => {
      const request = http.request({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': randomBytes(16).toString('base64'), 'Sec-WebSocket-Version': '13' },
        timeout: timeoutMs,
      });
      request.once('upgrade', (_response, upgraded: Socket, head: Buffer) => {
        if (head.length > 0) upgraded.unshift(head);
        resolve(upgraded);
      });
      request.once('response', (refused) => reject(new Error(`inspector refused the WebSocket upgrade: HTTP ${refused.statusCode}`)));
      request.once('timeout', () => request.destroy(new Error(`inspector upgrade timed out after ${timeoutMs} ms`)));
      request.once('error', reject);
      request.end();
    });
    socket.setNoDelay(true);
    return new InspectorSession(socket);
  }

  /** One CDP command; rejects on a protocol error, a closed connection or after timeoutMs. */
  send<T = unknown>(method: string, params: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
    if (this.closed) return Promise.reject(new Error('inspector connection closed'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (result: unknown) => void, reject, timer });
      this.writeFrame(OPCODE_TEXT, Buffer.from(JSON.stringify({ id, method, params })));
    });
  }

  close(): void {
    if (this.closed) return;
    this.writeFrame(OPCODE_CLOSE, Buffer.alloc(0));
    this.socket.end();
    this.socket.destroySoon();
  }

  /** Client frames are masked (RFC 6455 5.3). */
  private writeFrame(opcode: number, payload: Buffer): void {
    const length = payload.length;
    const header = length < 126 ? Buffer.alloc(2) : length < 65_536 ? Buffer.alloc(4) : Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    if (length < 126) header[1] = 0x80 | length;
    else if (length < 65_536) {
      header[1] = 0x80 | 126;
      header.writeUInt16BE(length, 2);
    } else {
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(length), 2);
    }
    const mask = randomBytes(4);
    const masked = Buffer.alloc(length);
    for (let index = 0; index < length; index += 1) masked[index] = (payload[index] as number) ^ (mask[index & 3] as number);
    this.socket.write(Buffer.concat([header, mask, masked]));
  }

  private onData(chunk: Buffer): void {
    this.received = this.received.length === 0 ? chunk : Buffer.concat([this.received, chunk]);
    for (;;) {
      if (this.received.length < 2) return;
      const first = this.received[0] as number;
      const second = this.received[1] as number;
      let length = second & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.received.length < 4) return;
        length = this.received.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.received.length < 10) return;
        length = Number(this.received.readBigUInt64BE(2));
        offset = 10;
      }
      const maskKey = (second & 0x80) !== 0 ? this.received.subarray(offset, offset + 4) : undefined;
      if (maskKey) offset += 4;
      if (this.received.length < offset + length) return;
      const payload = Buffer.from(this.received.subarray(offset, offset + length));
      if (maskKey) for (let index = 0; index < payload.length; index += 1) payload[index] = (payload[index] as number) ^ (maskKey[index & 3] as number);
      this.received = this.received.subarray(offset + length);
      const opcode = first & 0x0f;
      if (opcode === OPCODE_PING) this.writeFrame(OPCODE_PONG, payload);
      else if (opcode === OPCODE_CLOSE) this.socket.end();
      else if (opcode === OPCODE_TEXT || opcode === OPCODE_CONTINUATION) {
        this.fragments.push(payload);
        if ((first & 0x80) !== 0) {
          const text = Buffer.concat(this.fragments).toString('utf8');
          this.fragments = [];
          this.dispatch(text);
        }
      }
    }
  }

  private dispatch(text: string): void {
    const message = JSON.parse(text) as { id?: number; result?: unknown; error?: { message: string } };
    if (message.id === undefined) return; // An event: none is subscribed to here.
    const pending = this.pending.get(message.id);
    if (!pending) return;
    this.pending.delete(message.id);
    clearTimeout(pending.timer);
    if (message.error) pending.reject(new Error(message.error.message));
    else pending.resolve(message.result);
  }
}

/** A node of HeapProfiler.getSamplingProfile's tree. */
export interface SamplingHeapProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  selfSize: number;
  children: SamplingHeapProfileNode[];
}

export interface AllocationSite {
  /** The allocating function and its place, e.g. "SMTPConnection (node_modules/smtp-server/lib/smtp-connection.js:41)". */
  site: string;
  /** Its callers, nearest first, for the site's largest share (at most four). */
  calledFrom: string[];
  bytes: number;
}

/**
 * Live bytes by allocating function (the sampling profile keeps only objects still alive when it
 * is read), largest first. Paths are shown relative to `root`.
 */
export function allocationSites(head: SamplingHeapProfileNode, root: string, top = 15): AllocationSite[] {
  const sites = new Map<string, { bytes: number; largest: number; calledFrom: string[] }>();
  const label = (node: SamplingHeapProfileNode): string => {
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url ? `${url.replace(/^file:\/\//, '').replace(`${root}/`, '')}:${lineNumber + 1}` : '';
    return `${functionName || '(anonymous)'}${where ? ` (${where})` : ''}`;
  };
  // Iterative, deep trees are common; each entry carries its callers' labels, nearest first.
  const stack: Array<{ node: SamplingHeapProfileNode; callers: string[] }> = [{ node: head, callers: [] }];
  while (stack.length > 0) {
    const { node, callers } = stack.pop() as { node: SamplingHeapProfileNode; callers: string[] };
    const name = label(node);
    if (node.selfSize > 0) {
      const site = sites.get(name) ?? { bytes: 0, largest: 0, calledFrom: [] };
      site.bytes += node.selfSize;
      if (node.selfSize > site.largest) {
        site.largest = node.selfSize;
        site.calledFrom = callers.slice(0, 4);
      }
      sites.set(name, site);
    }
    for (const child of node.children) stack.push({ node: child, callers: [name, ...callers.slice(0, 3)] });
  }
  return [...sites.entries()]
    .map(([site, { bytes, calledFrom }]) => ({ site, calledFrom, bytes }))
    .sort((a, b) => b.bytes - a.bytes)
    .slice(0, top);
}
