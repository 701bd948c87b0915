// Builds the ioredis client for shared state from one URL. Tuned to fail fast: a short command timeout, few
// retries and no offline queue, so a down Redis costs a session a few hundred milliseconds at most and the
// callers fall back to their local view instead of queueing work.
//
// Accepted URL forms (user and password optional and percent-encoded; IPv6 hosts in brackets):
//   redis://[user[:password]@]host[:port][/db]                      standalone, port 6379, db 0
//   rediss://…                                                      the same over TLS
//   redis+sentinel://[user[:password]@]host[:port][,host[:port]…]/master[/db][?sentinelUsername=…&sentinelPassword=…]
//                                                                   Sentinel, sentinel port 26379; user and
//                                                                   password are for the master and replicas
//   rediss+sentinel://…                                             the same, TLS to the Sentinels and the master
//   redis+cluster://[user[:password]@]host[:port][,host[:port]…]    Cluster startup nodes, port 6379, no db
//   rediss+cluster://…                                              the same over TLS
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

export type RedisClient = Redis | Cluster;

export interface RedisTuning {
  /** Per command; an unanswered command fails after this, and the caller takes its stated fallback. */
  commandTimeoutMs: number;
  connectTimeoutMs: number;
  /** Reconnection attempts a command may wait for before failing; kept small so sessions never pile up. */
  maxRetriesPerRequest: number;
  /** Reconnect backoff cap, so a restarted Redis is picked up again within about this long. */
  reconnectMaxDelayMs: number;
  /** Do not connect until connect() (or the first command, which then fails because the offline queue is off). */
  lazyConnect: boolean;
  connectionName?: string;
}

export const DEFAULT_REDIS_TUNING: Readonly<RedisTuning> = Object.freeze({
  commandTimeoutMs: 250,
  connectTimeoutMs: 1_000,
  maxRetriesPerRequest: 1,
  reconnectMaxDelayMs: 1_000,
  lazyConnect: false,
});

export interface RedisNode {
  host: string;
  port: number;
}

export type RedisConnectionPlan =
  | { mode: 'standalone'; options: RedisOptions }
  | { mode: 'sentinel'; options: RedisOptions }
  | { mode: 'cluster'; nodes: RedisNode[]; options: ClusterOptions };

const URL_SHAPE = /^([a-z+]+):\/\/(?:([^@/?#]*)@)?([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?$/i;

function fail(url: string, why: string): never {
  // The URL may carry a password: only its redacted form is echoed, and no reason quotes a part of it
  // that could hold one.
  throw new Error(`invalid Redis URL "${redactRedisUrl(url)}": ${why}`);
}

/** Query parameters whose values are shown when a URL is printed; every other value may be a secret. */
const SHOWN_PARAMETERS: ReadonlySet<string> = new Set(['sentinelUsername']);

/**
 * The URL as it may be printed (logs, start errors): the scheme, the hosts and the path; user name and
 * password as "***", and every query value but SHOWN_PARAMETERS' as "***" (sentinelPassword, any
 * misspelling of it, and a parameter without '=' whole). It never assumes the URL is well-formed: an
 * unencoded '@', '/' or '?' in a password moves where the credentials seem to end, so they end at the
 * last '@' before the query, and the query starts at the first '?' whose text reaches a '=' before
 * any '@' (a '?' followed by an '@' without a '=' belongs to a password).
 */
export function redactRedisUrl(url: string): string {
  const match = /^([a-z][a-z0-9+.-]*):\/\/([^]*)$/i.exec(url.trim());
  if (!match) return '(not shown: not scheme://host)';
  const scheme = match[1]!.toLowerCase();
  const rest = match[2]!;
  let queryAt = -1;
  for (let question = rest.indexOf('?'); question !== -1; question = rest.indexOf('?', question + 1)) {
    const after = rest.slice(question + 1);
    const at = after.indexOf('@');
    const equals = after.indexOf('=');
    if (at === -1 || (equals !== -1 && equals < at)) {
      queryAt = question;
      break;
    }
  }
  const authorityAndPath = queryAt === -1 ? rest : rest.slice(0, queryAt);
  const lastAt = authorityAndPath.lastIndexOf('@');
  const shown = lastAt === -1 ? authorityAndPath : `***@${authorityAndPath.slice(lastAt + 1)}`;
  if (queryAt === -1) return `${scheme}://${shown}`;
  const query = rest.slice(queryAt + 1).split('&').map((pair) => {
    const equals = pair.indexOf('=');
    const name = equals === -1 ? pair : pair.slice(0, equals);
    let decoded = name;
    try {
      decoded = decodeURIComponent(name);
    } catch {
      // Not valid percent-encoding: compared as written, so it is not on the shown list either.
    }
    if (equals === -1) return '***';
    return SHOWN_PARAMETERS.has(decoded) ? pair : `${name}=***`;
  });
  return `${scheme}://${shown}?${query.join('&')}`;
}

function parseNodes(url: string, hostList: string, defaultPort: number): RedisNode[] {
  if (hostList === '') fail(url, 'no host');
  // Entries are named by position, not quoted: a password with an unencoded '/' or '?' ends up here.
  return hostList.split(',').map((entry, index) => {
    const match = /^(?:\[([0-9a-f:.]+)\]|([^:[\]]+))(?::(\d+))?$/i.exec(entry);
    if (!match) fail(url, `bad host (entry ${index + 1} of the host list)`);
    const port = match[3] === undefined ? defaultPort : Number(match[3]);
    if (!Number.isInteger(port) || port < 1 || port > 65_535) fail(url, `bad port in entry ${index + 1} of the host list`);
    return { host: (match[1] ?? match[2])!, port };
  });
}

function parseDb(url: string, segment: string | undefined): number {
  if (segment === undefined || segment === '') return 0;
  if (!/^\d+$/.test(segment)) fail(url, 'bad database: expected a number');
  return Number(segment);
}

function parseCredentials(userInfo: string | undefined): { username?: string; password?: string } {
  if (userInfo === undefined || userInfo === '') return {};
  const colon = userInfo.indexOf(':');
  const username = decodeURIComponent(colon === -1 ? userInfo : userInfo.slice(0, colon));
  const password = colon === -1 ? undefined : decodeURIComponent(userInfo.slice(colon + 1));
  return { ...(username ? { username } : {}), ...(password !== undefined ? { password } : {}) };
}

function parseQuery(url: string, query: string | undefined, allowed: readonly string[]): Map<string, string> {
  const params = new URLSearchParams(query ?? '');
  const result = new Map<string, string>();
  for (const [key, value] of params) {
    // Unknown parameters are rejected rather than ignored: a typo must not silently drop a password.
    // Named only when it looks like a parameter name, not like a piece of an unencoded password.
    if (!allowed.includes(key)) fail(url, /^\w{1,64}$/.test(key) ? `unknown parameter "${key}"` : 'unknown parameter (name not shown)');
    result.set(key, value);
  }
  return result;
}

function retryStrategy(tuning: RedisTuning): (times: number) => number {
  return (times) => Math.min(times * 100, tuning.reconnectMaxDelayMs);
}

/** Pure: turns a URL and tuning into what ioredis needs, so every form is unit-testable without a server. */
export function parseRedisUrl(url: string, overrides: Partial<RedisTuning> = {}): RedisConnectionPlan {
  // Undefined overrides (unset config values passed through) keep the defaults.
  const given = Object.fromEntries(Object.entries(overrides).filter(([, value]) => value !== undefined));
  const tuning: RedisTuning = { ...DEFAULT_REDIS_TUNING, ...given };
  const match = URL_SHAPE.exec(url.trim());
  if (!match) fail(url, 'expected scheme://host…');
  const [, rawScheme, userInfo, hostList, rawPath, query] = match;
  // An '@' the credentials did not take is one of theirs left unencoded: the host or path would hold
  // the rest of a password, so say so without quoting either.
  if (`${hostList}${rawPath ?? ''}`.includes('@')) fail(url, 'an "@" after the credentials: percent-encode "@", "/", "?" and "#" in a user name or password (%40, %2F, %3F, %23)');
  const scheme = rawScheme!.toLowerCase();
  const credentials = parseCredentials(userInfo);
  const tls = scheme.startsWith('rediss') ? { tls: {} } : {};
  const common = {
    ...credentials,
    commandTimeout: tuning.commandTimeoutMs,
    connectTimeout: tuning.connectTimeoutMs,
    maxRetriesPerRequest: tuning.maxRetriesPerRequest,
    ...(tuning.connectionName ? { connectionName: tuning.connectionName } : {}),
  };
  const segments = (rawPath ?? '').split('/').slice(1).map(decodeURIComponent);

  switch (scheme) {
    case 'redis':
    case 'rediss': {
      const nodes = parseNodes(url, hostList!, 6379);
      if (nodes.length !== 1) fail(url, 'several hosts need redis+sentinel:// or redis+cluster://');
      if (segments.length > 1) fail(url, 'path must be /db');
      parseQuery(url, query, []);
      const { host, port } = nodes[0]!;
      const tlsOptions = scheme === 'rediss' ? { tls: { servername: host } } : {};
      const options: RedisOptions = {
        ...common,
        ...tlsOptions,
        host,
        port,
        db: parseDb(url, segments[0]),
        enableOfflineQueue: false,
        lazyConnect: tuning.lazyConnect,
        retryStrategy: retryStrategy(tuning),
      };
      return { mode: 'standalone', options };
    }
    case 'redis+sentinel':
    case 'rediss+sentinel': {
      const sentinels = parseNodes(url, hostList!, 26379);
      const [name, db, ...rest] = segments;
      if (!name) fail(url, 'Sentinel URLs need the master name as the path: /mymaster');
      if (rest.length > 0) fail(url, 'path must be /master or /master/db');
      const params = parseQuery(url, query, ['sentinelUsername', 'sentinelPassword']);
      const sentinelUsername = params.get('sentinelUsername');
      const sentinelPassword = params.get('sentinelPassword');
      const options: RedisOptions = {
        ...common,
        ...tls,
        ...(scheme === 'rediss+sentinel' ? { enableTLSForSentinelMode: true } : {}),
        ...(sentinelUsername !== undefined ? { sentinelUsername } : {}),
        ...(sentinelPassword !== undefined ? { sentinelPassword } : {}),
        sentinels: sentinels,
        name,
        db: parseDb(url, db),
        sentinelCommandTimeout: tuning.commandTimeoutMs,
        enableOfflineQueue: false,
        lazyConnect: tuning.lazyConnect,
        retryStrategy: retryStrategy(tuning),
        sentinelRetryStrategy: retryStrategy(tuning),
      };
      return { mode: 'sentinel', options };
    }
    case 'redis+cluster':
    case 'rediss+cluster': {
      const nodes = parseNodes(url, hostList!, 6379);
      if (segments.some((segment) => segment !== '')) fail(url, 'Redis Cluster has no databases; drop the path');
      parseQuery(url, query, []);
      const options: ClusterOptions = {
        enableOfflineQueue: false,
        lazyConnect: tuning.lazyConnect,
        slotsRefreshTimeout: tuning.connectTimeoutMs,
        clusterRetryStrategy: retryStrategy(tuning),
        redisOptions: { ...common, ...tls },
      };
      return { mode: 'cluster', nodes, options };
    }
    default:
      return fail(url, `unsupported scheme "${scheme}"`);
  }
}

/**
 * Creates the client. ioredis emits 'error' on every failed (re)connect; without a listener Node would print each
 * one, so errors go to onError (the status monitor already logs outages once, so the default ignores them).
 */
export function createRedisClient(
  url: string,
  overrides: Partial<RedisTuning> = {},
  onError: (error: Error) => void = () => undefined,
): RedisClient {
  const plan = parseRedisUrl(url, overrides);
  const client = plan.mode === 'cluster' ? new Cluster(plan.nodes, plan.options) : new Redis(plan.options);
  client.on('error', onError);
  return client;
}

/**
 * Waits until the client is ready, at most timeoutMs. With the offline queue off, commands sent before 'ready'
 * fail at once, so startup waits here; false means Redis is not there yet and the caller starts degraded (the
 * client keeps reconnecting in the background).
 */
export function waitForRedisReady(client: RedisClient, timeoutMs: number): Promise<boolean> {
  if (client.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ready: boolean) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      resolve(ready);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    timer.unref();
    client.on('ready', onReady);
  });
}
