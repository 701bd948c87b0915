// The admin HTTP listener: /status (the server's entropy status as JSON), /metrics (Prometheus
// text), /healthz (the process answers) and /readyz (it accepts mail). Read-only; loopback by
// default. Later stages add their routes through `routes`. Its connections are capped and timed out
// every second, so idle clients of the admin port cannot use up the descriptors SMTP clients need.
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { HostPort } from '../util/host-port.js';

export interface AdminResponse {
  status: number;
  contentType: string;
  body: string;
  /** Extra response headers (e.g. a page's Content-Security-Policy). */
  headers?: Record<string, string>;
}

export type AdminRoute = (request: http.IncomingMessage, url: URL) => Promise<AdminResponse | undefined> | AdminResponse | undefined;

export interface AdminSources {
  status(): object;
  metrics(): Promise<{ contentType: string; body: string }>;
  ready(): boolean;
  /** Extra routes tried in order before the built-in ones answer 404. */
  routes?: AdminRoute[];
  /** Host names answered besides IP literals and localhost (admin.allowedHosts); read per request. */
  allowedHosts?: () => readonly string[];
  /** Connections at once (admin.maxConnections); Node closes any beyond as it is accepted. */
  maxConnections: number;
}

/** How often Node looks for requests past headersTimeout or requestTimeout (its default is 30 s). */
const TIMEOUT_CHECK_INTERVAL_MS = 1_000;

export function json(status: number, value: unknown): AdminResponse {
  return { status, contentType: 'application/json; charset=utf-8', body: `${JSON.stringify(value, null, 2)}\n` };
}

function text(status: number, body: string): AdminResponse {
  return { status, contentType: 'text/plain; charset=utf-8', body };
}

export class AdminServer {
  private readonly server: http.Server;

  constructor(private readonly sources: AdminSources) {
    this.server = http.createServer({ connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS }, (request, response) => {
      this.route(request).then(
        (answer) => send(response, answer),
        (error: Error) => send(response, text(500, `internal error: ${error.message}\n`)),
      );
    });
    // An admin client that never finishes its request, or idles between requests, must not hold a socket:
    // a connection counts against maxConnections until it closes.
    this.server.maxConnections = sources.maxConnections;
    this.server.requestTimeout = 10_000;
    this.server.headersTimeout = 5_000;
    this.server.keepAliveTimeout = 5_000;
    // headersTimeout only starts at a request's first byte: a connection that sends nothing is closed by
    // this inactivity timeout instead.
    this.server.timeout = 5_000;
  }

  listen(address: HostPort): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(address.port, address.host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async route(request: http.IncomingMessage): Promise<AdminResponse> {
    if (!hostAllowed(request.headers.host, this.sources.allowedHosts?.() ?? [])) {
      return text(421, 'misdirected request: this Host is not served here (admin.allowedHosts)\n');
    }
    const url = new URL(request.url ?? '/', 'http://admin.invalid');
    for (const route of this.sources.routes ?? []) {
      const answer = await route(request, url);
      if (answer) return answer;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') return text(405, 'method not allowed\n');
    switch (url.pathname) {
      case '/status':
        return json(200, this.sources.status());
      case '/metrics': {
        const { contentType, body } = await this.sources.metrics();
        return { status: 200, contentType, body };
      }
      case '/healthz':
        return text(200, 'ok\n');
      case '/readyz':
        return this.sources.ready() ? text(200, 'ready\n') : text(503, 'not ready\n');
      default:
        return text(404, 'not found\n');
    }
  }
}

function send(response: http.ServerResponse, answer: AdminResponse): void {
  response.writeHead(answer.status, { ...answer.headers, 'content-type': answer.contentType, 'cache-control': 'no-store' });
  response.end(response.req.method === 'HEAD' ? undefined : answer.body);
}

/**
 * DNS rebinding guard: a page on evil.example that re-points its name at 127.0.0.1 reaches this
 * listener with "Host: evil.example". IP literals, localhost and the configured names pass; a request
 * without Host (HTTP/1.0 tools) passes too, as no browser sends one.
 */
export function hostAllowed(hostHeader: string | undefined, allowedHosts: readonly string[]): boolean {
  if (hostHeader === undefined || hostHeader === '') return true;
  const host = hostHeader.startsWith('[') ? hostHeader.slice(1, hostHeader.indexOf(']')) : hostHeader.replace(/:\d+$/, '');
  const name = host.toLowerCase().replace(/\.$/, '');
  return net.isIP(name) !== 0 || name === 'localhost' || allowedHosts.some((allowed) => allowed.toLowerCase() === name);
}
