// The quarantine's operator API on the admin listener: list, show, stats (read-only), release and delete
// (changes). Everything but stats needs `Authorization: Bearer <quarantine.adminToken>`; without a configured
// token it is refused, so a proxy never runs with an open door. The list and an entry carry third parties'
// envelopes, HELO and headers, which the spool keeps 0640: any local user reaches the loopback listener, so
// reading them takes the token too. Stats are counts, as /status shows them. The scheduler decides how a
// release goes; this module only asks.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { EntryNotFoundError, type QuarantineSpool } from '../quarantine/spool.js';
import { compileEntryFilter, ENTRY_STATES, isEntryId, type EntryFilter, type EntryMeta, type EntryState } from '../quarantine/spool-entry.js';
import { json, type AdminResponse, type AdminRoute } from './http-server.js';

/** What the routes need of the quarantine: the spool and the scheduler's "release these now or soon". */
export interface QuarantineControl {
  spool: QuarantineSpool;
  release(ids: readonly string[], options: { force: boolean }): Promise<Array<{ id: string; outcome: string; detail?: string }>>;
}

export interface QuarantineRouteOptions {
  nowMs?: () => number;
  /** Largest JSON body of POST /quarantine/release. */
  maxBodyBytes?: number;
  /** A client that has not sent its whole body by then gets 408. */
  bodyTimeoutMs?: number;
  /** How much of a stored message GET /quarantine/:id reads looking for the end of the headers. */
  maxHeaderBytes?: number;
  headerReadTimeoutMs?: number;
}

/** Entries one list answer carries at most; `total` still counts every match. */
export const LIST_LIMIT_MAX = 10_000;
const LIST_LIMIT_DEFAULT = 1_000;

const AGE_UNITS_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** "90s", "30m", "12h", "7d", "2w" to milliseconds; undefined for anything else. */
export function parseAgeMs(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*([smhdw])$/.exec(text.trim());
  return match ? Number(match[1]) * (AGE_UNITS_MS[match[2] as string] as number) : undefined;
}

class RequestError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export function quarantineRoutes(control: QuarantineControl, token: () => string | null, options: QuarantineRouteOptions = {}): AdminRoute[] {
  const nowMs = options.nowMs ?? Date.now;
  const limits = {
    maxBodyBytes: options.maxBodyBytes ?? 64 * 1024,
    bodyTimeoutMs: options.bodyTimeoutMs ?? 5_000,
    maxHeaderBytes: options.maxHeaderBytes ?? 64 * 1024,
    headerReadTimeoutMs: options.headerReadTimeoutMs ?? 5_000,
  };
  const spool = control.spool;

  const read = async (url: URL, path: string[]): Promise<AdminResponse> => {
    if (path.length === 0) {
      const matches = spool.list(filterFrom(url, nowMs()));
      return json(200, { total: matches.length, entries: matches.slice(0, listLimit(url.searchParams.get('limit'))) });
    }
    if (path[0] === 'release' || path[1] === 'release') throw new RequestError(405, 'release takes POST');
    if (path.length > 1) throw new RequestError(404, 'not found');
    const entry = knownEntry(spool, path[0] as string);
    const { headers, truncated } = await readHeaders(() => spool.readMessage(entry.id), limits.maxHeaderBytes, limits.headerReadTimeoutMs);
    return json(200, { entry, headers, headersTruncated: truncated });
  };

  const change = async (request: IncomingMessage, url: URL, path: string[]): Promise<AdminResponse> => {
    if (request.method === 'POST' && path.length === 1 && path[0] === 'release') {
      const body = parseReleaseBody(await readBody(request, limits.maxBodyBytes, limits.bodyTimeoutMs));
      const { ids, unknown } = releaseSelection(spool, body);
      const results = ids.length > 0 ? await control.release(ids, { force: body.now }) : [];
      return json(200, { results: [...results, ...unknown.map((id) => ({ id, outcome: 'not-found' }))] });
    }
    if (request.method === 'POST' && path.length === 2 && path[1] === 'release') {
      const entry = knownEntry(spool, path[0] as string);
      const force = flag(url.searchParams.get('now'), 'now');
      return json(200, { results: await control.release([entry.id], { force }) });
    }
    if (request.method === 'DELETE' && path.length === 1) {
      const entry = knownEntry(spool, path[0] as string);
      if (entry.state === 'releasing') throw new RequestError(409, `${entry.id} is being released right now; try again shortly`);
      await removeEntry(spool, entry.id);
      return json(200, { removed: [entry.id] });
    }
    if (request.method === 'DELETE' && path.length === 0) return removeOlder(spool, url, nowMs());
    throw new RequestError(path.length <= 2 ? 405 : 404, path.length <= 2 ? 'method not allowed' : 'not found');
  };

  return [
    async (request, url) => {
      const path = quarantinePath(url.pathname);
      if (!path) return undefined;
      try {
        const reading = request.method === 'GET' || request.method === 'HEAD';
        if (reading && path.length === 1 && path[0] === 'stats') return json(200, spool.stats());
        if (!reading && request.method !== 'POST' && request.method !== 'DELETE') throw new RequestError(405, 'method not allowed');
        // Before anything else, the body and the id included: an unauthorised caller learns nothing and changes nothing.
        const refusal = authorise(request, token());
        if (refusal) return json(401, { error: refusal });
        return await (reading ? read(url, path) : change(request, url, path));
      } catch (error) {
        if (error instanceof RequestError) return json(error.status, { error: error.message });
        if (error instanceof EntryNotFoundError) return json(404, { error: error.message });
        throw error;
      }
    },
  ];
}

/** ["x", "release"] for /quarantine/x/release; undefined outside /quarantine. */
function quarantinePath(pathname: string): string[] | undefined {
  if (pathname !== '/quarantine' && !pathname.startsWith('/quarantine/')) return undefined;
  return pathname.split('/').slice(2).filter((part) => part !== '');
}

/** The refusal's reason, or undefined when the request carries the configured token. */
function authorise(request: IncomingMessage, configured: string | null): string | undefined {
  if (configured === null || configured === '') return 'no admin token configured on the proxy (quarantine.adminToken or PUSHBACK_ADMIN_TOKEN)';
  const match = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? '');
  if (!match) return 'admin token missing or wrong';
  // Digests have equal length whatever was sent, so neither the comparison nor its length check leaks the token.
  const digest = (text: string): Buffer => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(match[1] as string), digest(configured)) ? undefined : 'admin token missing or wrong';
}

function knownEntry(spool: QuarantineSpool, id: string): EntryMeta {
  if (!isEntryId(id)) throw new RequestError(400, `not an entry id: "${id.slice(0, 80)}"`);
  const entry = spool.get(id);
  if (!entry) throw new RequestError(404, `no quarantine entry ${id}`);
  return entry;
}

function filterFrom(url: URL, nowMs: number): EntryFilter {
  const filter: EntryFilter = {};
  const source = url.searchParams.get('source');
  if (source !== null) filter.sourceCidr = checkedCidr(source);
  const since = url.searchParams.get('since');
  if (since !== null) filter.sinceMs = instantMs(since, nowMs);
  const state = url.searchParams.get('state');
  if (state !== null) {
    if (!(ENTRY_STATES as readonly string[]).includes(state)) throw new RequestError(400, `state must be one of ${ENTRY_STATES.join(', ')}`);
    filter.state = state as EntryState;
  }
  return filter;
}

/** A bad prefix is the caller's mistake (400), found before any entry is looked at. */
function checkedCidr(cidr: string): string {
  try {
    compileEntryFilter({ sourceCidr: cidr });
    return cidr;
  } catch (error) {
    throw new RequestError(400, (error as Error).message);
  }
}

/** Epoch milliseconds, an ISO 8601 instant, or an age ("12h": that long ago). */
function instantMs(text: string, nowMs: number): number {
  if (/^\d+$/.test(text)) return Number(text);
  const ageMs = parseAgeMs(text);
  if (ageMs !== undefined) return nowMs - ageMs;
  const parsed = Date.parse(text);
  if (Number.isNaN(parsed)) throw new RequestError(400, `since: expected epoch ms, an ISO 8601 time or an age like 12h, got "${text.slice(0, 80)}"`);
  return parsed;
}

function listLimit(text: string | null): number {
  if (text === null) return LIST_LIMIT_DEFAULT;
  const limit = Number(text);
  if (!Number.isInteger(limit) || limit < 1) throw new RequestError(400, 'limit must be a positive integer');
  return Math.min(limit, LIST_LIMIT_MAX);
}

function flag(text: string | null, name: string): boolean {
  if (text === null || text === '0' || text === 'false') return false;
  if (text === '' || text === '1' || text === 'true') return true;
  throw new RequestError(400, `${name} must be 1 or 0`);
}

interface ReleaseBody {
  ids?: string[];
  source?: string;
  all?: true;
  now: boolean;
}

function parseReleaseBody(raw: Buffer): ReleaseBody {
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new RequestError(400, 'body must be JSON: {"ids": [...]} or {"source": "CIDR"} or {"all": true}, with "now": true to skip the off-peak wait');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new RequestError(400, 'body must be a JSON object');
  const { ids, source, all, now, ...rest } = value as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw new RequestError(400, `unknown field(s): ${Object.keys(rest).join(', ')}`);
  const selectors = [ids, source, all].filter((selector) => selector !== undefined).length;
  if (selectors !== 1) throw new RequestError(400, 'name exactly one of "ids", "source" or "all"');
  if (now !== undefined && typeof now !== 'boolean') throw new RequestError(400, '"now" must be true or false');
  const body: ReleaseBody = { now: now === true };
  if (ids !== undefined) {
    if (!Array.isArray(ids) || ids.length === 0 || !ids.every((id): id is string => typeof id === 'string')) throw new RequestError(400, '"ids" must be a non-empty array of entry ids');
    const bad = ids.find((id) => !isEntryId(id));
    if (bad !== undefined) throw new RequestError(400, `not an entry id: "${bad.slice(0, 80)}"`);
    body.ids = [...new Set(ids)];
  }
  if (source !== undefined) {
    if (typeof source !== 'string') throw new RequestError(400, '"source" must be an address or CIDR prefix');
    body.source = source;
  }
  if (all !== undefined) {
    if (all !== true) throw new RequestError(400, '"all" must be true');
    body.all = true;
  }
  return body;
}

/**
 * Named ids go to the scheduler as they are (it reports what it did with each); ids the spool does not know are
 * answered "not-found" here. A source or "all" means the entries still held: the others are being released or done.
 */
function releaseSelection(spool: QuarantineSpool, body: ReleaseBody): { ids: string[]; unknown: string[] } {
  if (body.ids) {
    return { ids: body.ids.filter((id) => spool.get(id)), unknown: body.ids.filter((id) => !spool.get(id)) };
  }
  const filter: EntryFilter = { state: 'held' };
  if (body.source !== undefined) filter.sourceCidr = checkedCidr(body.source);
  return { ids: spool.list(filter).map((entry) => entry.id), unknown: [] };
}

/** DELETE /quarantine?olderThan=7d[&source=CIDR][&state=S]: entries received before now - age; never one mid-release. */
async function removeOlder(spool: QuarantineSpool, url: URL, nowMs: number): Promise<AdminResponse> {
  const olderThan = url.searchParams.get('olderThan');
  const ageMs = olderThan === null ? undefined : parseAgeMs(olderThan);
  if (ageMs === undefined) throw new RequestError(400, 'olderThan must be an age like 30m, 12h or 7d (a bulk delete needs one)');
  const cutoffMs = nowMs - ageMs;
  const candidates = spool.list(filterFrom(url, nowMs)).filter((entry) => entry.receivedAtMs < cutoffMs);
  const removed: string[] = [];
  const skipped: string[] = [];
  for (const entry of candidates) {
    if (entry.state === 'releasing') skipped.push(entry.id);
    else if (await removeEntry(spool, entry.id)) removed.push(entry.id);
  }
  return json(200, { removed, skipped });
}

/** False when the entry went meanwhile (released and removed by the scheduler): what the caller wanted anyway. */
async function removeEntry(spool: QuarantineSpool, id: string): Promise<boolean> {
  try {
    await spool.remove(id);
    return true;
  } catch (error) {
    if (error instanceof EntryNotFoundError) return false;
    throw error;
  }
}

/**
 * The header section of a stored message (our Received header first): bytes up to the first empty line, at
 * most maxBytes. The stream is always destroyed, so its file descriptor never outlives the request.
 */
async function readHeaders(open: () => Promise<Readable>, maxBytes: number, timeoutMs: number): Promise<{ headers: string; truncated: boolean }> {
  const stream = await open();
  const timer = setTimeout(() => stream.destroy(new Error(`reading the stored message took over ${timeoutMs} ms`)), timeoutMs);
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      if (length >= maxBytes || headerEnd(Buffer.concat(chunks)) !== undefined) break;
    }
  } finally {
    clearTimeout(timer);
    stream.destroy();
  }
  const all = Buffer.concat(chunks);
  // No blank line in a short message: it is all header. In a long one: we stopped looking.
  const end = headerEnd(all) ?? (length < maxBytes ? all.length : undefined);
  return { headers: all.subarray(0, Math.min(end ?? maxBytes, maxBytes)).toString('utf8'), truncated: end === undefined || end > maxBytes };
}

/** Offset just past the header section's last line ending, or undefined when the blank line is not in `bytes`. */
function headerEnd(bytes: Buffer): number | undefined {
  const crlf = bytes.indexOf('\r\n\r\n');
  const lf = bytes.indexOf('\n\n');
  if (crlf === -1 && lf === -1) return undefined;
  if (lf === -1 || (crlf !== -1 && crlf < lf)) return crlf + 2;
  return lf + 1;
}

function readBody(request: IncomingMessage, maxBytes: number, timeoutMs: number): Promise<Buffer> {
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) return Promise.reject(new RequestError(413, `body over ${maxBytes} bytes`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const finish = (error: Error | undefined): void => {
      clearTimeout(timer);
      request.off('data', onData).off('end', onEnd).off('error', finish);
      if (error) reject(error);
      else resolve(Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer): void => {
      length += chunk.length;
      if (length > maxBytes) finish(new RequestError(413, `body over ${maxBytes} bytes`));
      else chunks.push(chunk);
    };
    const onEnd = (): void => finish(undefined);
    // A client that stops mid-body must not hold the request (and the release it asks for) open.
    const timer = setTimeout(() => finish(new RequestError(408, `body not received within ${timeoutMs} ms`)), timeoutMs);
    request.on('data', onData).on('end', onEnd).on('error', finish);
  });
}
