// Admin routes of the dashboard: the page at / and /dashboard, and /status/history, the last hour of
// status points the page plots (all of it, or only what came after ?sinceMs= for the page's refreshes).
import { DASHBOARD_CSP, DASHBOARD_HTML } from './dashboard-page.js';
import { json, type AdminRoute } from './http-server.js';
import type { StatusHistory } from '../state/status-history.js';

const PAGE_HEADERS = {
  'content-security-policy': DASHBOARD_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

export function dashboardRoutes(history: StatusHistory): AdminRoute[] {
  return [
    (request, url) => {
      if (request.method !== 'GET' && request.method !== 'HEAD') return undefined;
      if (url.pathname === '/' || url.pathname === '/dashboard') {
        return { status: 200, contentType: 'text/html; charset=utf-8', body: DASHBOARD_HTML, headers: PAGE_HEADERS };
      }
      if (url.pathname !== '/status/history') return undefined;
      const since = url.searchParams.get('sinceMs');
      const sinceMs = since === null ? undefined : Number(since);
      if (sinceMs !== undefined && (since === '' || !Number.isFinite(sinceMs))) return json(400, { error: 'sinceMs must be a number (epoch ms)' });
      return {
        status: 200,
        contentType: 'application/json; charset=utf-8',
        // Compact, unlike json(): an hour is thousands of points, fetched whole when the page opens.
        body: `${JSON.stringify({
          historySeconds: history.historySeconds,
          statusIntervalMs: history.statusIntervalMs,
          sampleMs: history.sampleMs,
          capacity: history.capacity,
          points: history.points(sinceMs),
        })}\n`,
      };
    },
  ];
}
