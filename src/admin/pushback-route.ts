// GET /pushback: the blocked prefixes for routers and firewalls that pull. JSON by default (with each
// prefix's action, detector, reasons and remaining time); `?format=text` gives one prefix per line, only
// what is enforced now (nothing in observe mode), for `ip route`/ACL scripts and the like. `?limit=N`
// gives the first N entries of the JSON with `total` for all of them.
import { timeoutSeconds, renderPrefixList } from '../enforce/blocked-prefixes.js';
import type { FirewallExporter } from '../enforce/firewall-export.js';
import { json, type AdminRoute } from './http-server.js';

export function pushbackRoute(exporter: Pick<FirewallExporter, 'snapshot' | 'exportedNow'>, now: () => number = Date.now): AdminRoute {
  return (request, url) => {
    if (url.pathname !== '/pushback' || (request.method !== 'GET' && request.method !== 'HEAD')) return undefined;
    const snapshot = exporter.snapshot();
    // Before the first read an empty list would tell a puller to unblock everything: say "not yet" instead.
    if (snapshot.generatedAtMs === 0) return { status: 503, contentType: 'text/plain; charset=utf-8', body: 'blocked set not read yet\n' };
    const format = url.searchParams.get('format') ?? 'json';
    if (format === 'text') return { status: 200, contentType: 'text/plain; charset=utf-8', body: renderPrefixList(exporter.exportedNow()) };
    if (format !== 'json') return json(400, { error: `unknown format "${format}" (json or text)` });
    const limitText = url.searchParams.get('limit');
    const limit = limitText === null ? Infinity : Number(limitText);
    if (!Number.isSafeInteger(limit) && limit !== Infinity) return json(400, { error: `limit must be a whole number, got "${limitText}"` });
    if (limit < 0) return json(400, { error: 'limit must not be negative' });
    const nowMs = now();
    const live = snapshot.entries.filter((entry) => entry.expiresAtMs === null || entry.expiresAtMs > nowMs);
    return json(200, {
      generatedAtMs: snapshot.generatedAtMs,
      enforced: snapshot.enforced,
      stale: snapshot.stale,
      truncated: snapshot.truncated,
      widenedWithheld: snapshot.widenedWithheld,
      total: live.length,
      // The dashboard asks for the first rows only: a flood's tens of thousands would cost every poll.
      entries: live.slice(0, limit).map((entry) => ({ ...entry, ttlSeconds: timeoutSeconds(entry, nowMs) })),
    });
  };
}
