// The dashboard on a running proxy: its routes over HTTP, then the page in a real headless browser
// (Debian's chromium driven by playwright-core) after real SMTP sessions, normal and abandoned, checked
// number by number against the /status answer the page itself received.
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DASHBOARD_CSP } from '../../src/admin/dashboard-page.js';
import type { StatusPoint } from '../../src/state/status-history.js';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { abandonedSession, completeSession, inParallel } from '../support/sessions.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

const CHROMIUM_PATH = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
// Observe mode, so the flood of abandoned sessions is only counted, never slowed or refused; a window
// long enough that no pair ages out while the test reads the page.
const POLICY = `
mode: observe
entropy: { statusIntervalMs: 200, windowSeconds: 300, minPairs: 10 }
pushback: { greetWaitMs: { critical: 0, danger: 0 }, deny: [203.0.113.0/24] }
`;
const COMPLETE_SESSIONS = 6;
const ABANDONED_SESSIONS = 60;
const NORMAL_PAIRS = COMPLETE_SESSIONS * 6;

interface StatusAnswer {
  status: number; effectiveStatus: number; reason: string; mode: string; computedAt: number;
  hNormal: number; hAbnormal: number; distance: number | null; deltaBits: number; windowSeconds: number;
  normalPairs: number; abnormalPairs: number; untrackedPairs: number;
  topSources: Array<{ source: string; normal: number; abnormal: number }>;
  suspectPrefixes: Array<{ prefix: string }>;
  quarantine: { entries: number } | null;
}

interface HistoryAnswer {
  historySeconds: number;
  statusIntervalMs: number;
  sampleMs: number;
  capacity: number;
  points: StatusPoint[];
}

let upstream: FakeUpstream;
let proxy: TestProxy | undefined;
let browser: Browser | undefined;
let admin: string;

async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(`${admin}${path}`, { signal: AbortSignal.timeout(5_000) });
  expect(response.status).toBe(200);
  return (await response.json()) as T;
}

/** Console errors and uncaught exceptions of the page. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (message: ConsoleMessage) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  page.on('pageerror', (error) => errors.push(error.message));
  return errors;
}

async function shown(page: Page, id: string): Promise<{ text: string; value: unknown }> {
  const node = page.locator(`#${id}`);
  return { text: (await node.textContent()) ?? '', value: JSON.parse((await node.getAttribute('data-value')) ?? 'undefined') };
}

async function tableRows(page: Page, selector: string): Promise<string[][]> {
  const rows = page.locator(`${selector} tbody tr`);
  const result: string[][] = [];
  for (let index = 0; index < (await rows.count()); index += 1) result.push(await rows.nth(index).locator('td').allTextContents());
  return result;
}

beforeAll(async () => {
  upstream = await FakeUpstream.start();
  proxy = await startTestProxy(upstream.address, POLICY);
  admin = `http://127.0.0.1:${proxy.proxy.adminAddress.port}`;
  browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, timeout: 30_000 });
});

afterAll(async () => {
  await browser?.close();
  await proxy?.stop();
  await upstream?.close();
});

describe('dashboard routes', () => {
  it('serves one page at / and /dashboard, with its CSP, no-store and nothing cached', async () => {
    const [root, dashboard] = await Promise.all([fetch(`${admin}/`), fetch(`${admin}/dashboard`)]);
    for (const response of [root, dashboard]) {
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(response.headers.get('content-security-policy')).toBe(DASHBOARD_CSP);
      expect(response.headers.get('cache-control')).toBe('no-store');
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    }
    const [rootBody, dashboardBody] = await Promise.all([root.text(), dashboard.text()]);
    expect(rootBody).toBe(dashboardBody);
    expect(rootBody).toMatch(/^<!doctype html>/);
    const head = await fetch(`${admin}/dashboard`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
    expect((await fetch(`${admin}/dashboard`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${admin}/dashboard/x`)).status).toBe(404);
  });

  it('answers /status/history whole and after sinceMs, and refuses a sinceMs that is no number', async () => {
    // The first tick ran before the listener opened; wait for a few more.
    await expect.poll(async () => (await getJson<HistoryAnswer>('/status/history')).points.length, { timeout: 5_000 }).toBeGreaterThanOrEqual(2);
    const history = await getJson<HistoryAnswer>('/status/history');
    expect(history).toMatchObject({ historySeconds: 3_600, statusIntervalMs: 200, sampleMs: 1_000, capacity: 3_600 });
    const times = history.points.map((point) => point.computedAt);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(Object.keys(history.points[0]!).sort()).toEqual(['abnormalPairs', 'computedAt', 'distance', 'effectiveStatus', 'hAbnormal', 'hNormal', 'normalPairs', 'status']);
    const since = await getJson<HistoryAnswer>(`/status/history?sinceMs=${times[0]}`);
    expect(since.points[0]?.computedAt).toBe(times[1]);
    for (const bad of ['', 'soon', 'NaN']) expect((await fetch(`${admin}/status/history?sinceMs=${bad}`)).status).toBe(400);
  });
});

describe('dashboard in a real browser', () => {
  it('shows the numbers of the /status it fetched, and plots the history', { timeout: 60_000 }, async () => {
    const testProxy = proxy!;
    for (let index = 0; index < COMPLETE_SESSIONS; index += 1) expect(await completeSession(testProxy.port)).toBe(250);
    // A safe point with pairs in the history before the flood, so the plot has S = 1 and S = -1.
    await expect.poll(async () => (await getJson<HistoryAnswer>('/status/history')).points.some((point) => point.normalPairs === NORMAL_PAIRS), { timeout: 10_000 }).toBe(true);
    await inParallel(ABANDONED_SESSIONS, 6, (index) => abandonedSession(testProxy.port, `127.0.0.${10 + (index % 7)}`));
    await expect.poll(async () => (await getJson<HistoryAnswer>('/status/history')).points.at(-1)?.abnormalPairs, { timeout: 10_000 }).toBe(ABANDONED_SESSIONS);

    const page = await browser!.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = watchErrors(page);
    try {
      // One refresh in five minutes: the page stays on the /status answer it fetched on load.
      const statusResponse = page.waitForResponse((response) => new URL(response.url()).pathname === '/status');
      const sourcesResponse = page.waitForResponse((response) => new URL(response.url()).pathname === '/sources');
      await page.goto(`${admin}/dashboard?refresh=300`, { timeout: 15_000 });
      const fetched = (await (await statusResponse).json()) as StatusAnswer;
      const sfds = (await (await sourcesResponse).json()) as { sources: Array<{ source: string; flows: number; bytes: number }> };
      await page.locator('#plot[data-points]').waitFor({ timeout: 10_000 });

      expect(fetched).toMatchObject({ status: -1, effectiveStatus: -1, reason: 'pairs', mode: 'observe', normalPairs: NORMAL_PAIRS, abnormalPairs: ABANDONED_SESSIONS });
      expect(await shown(page, 'computed-at')).toEqual({ text: expect.stringMatching(/^\d\d:\d\d:\d\d$/), value: fetched.computedAt });
      expect(await shown(page, 'status')).toEqual({ text: '-1 danger', value: fetched.status });
      expect(await shown(page, 'effective-status')).toEqual({ text: '-1 danger', value: fetched.effectiveStatus });
      expect(await shown(page, 'h-normal')).toEqual({ text: fetched.hNormal.toFixed(3), value: fetched.hNormal });
      expect(await shown(page, 'h-abnormal')).toEqual({ text: fetched.hAbnormal.toFixed(3), value: fetched.hAbnormal });
      expect(await shown(page, 'distance')).toEqual({ text: fetched.distance!.toFixed(3), value: fetched.distance });
      expect(await shown(page, 'normal-pairs')).toEqual({ text: String(NORMAL_PAIRS), value: fetched.normalPairs });
      expect(await shown(page, 'abnormal-pairs')).toEqual({ text: String(ABANDONED_SESSIONS), value: fetched.abnormalPairs });
      expect(await shown(page, 'untracked-pairs')).toEqual({ text: '0', value: fetched.untrackedPairs });
      expect(await shown(page, 'window-seconds')).toEqual({ text: '300 s', value: fetched.windowSeconds });
      expect(await shown(page, 'mode')).toEqual({ text: 'observe', value: fetched.mode });
      expect(await page.locator('#status-card').getAttribute('class')).toContain('danger');

      // Nothing arrives after the sessions, so the window, and every number above, is what /status says now too.
      const now = await getJson<StatusAnswer>('/status');
      expect(now.computedAt).toBeGreaterThanOrEqual(fetched.computedAt);
      const numbers = (answer: StatusAnswer) => [answer.status, answer.hNormal, answer.hAbnormal, answer.distance, answer.normalPairs, answer.abnormalPairs, answer.mode];
      expect(numbers(now)).toEqual(numbers(fetched));

      expect((await tableRows(page, '#pair-sources')).map((row) => row.map(String))).toEqual(
        fetched.topSources.map((source) => [source.source, String(source.normal), String(source.abnormal)]),
      );
      // Only the deny list is blocked so far (abandoned sessions earn no verdicts in the safe-by-default policy).
      expect(await page.locator('#prefixes').getAttribute('data-source')).toBe('pushback');
      expect((await tableRows(page, '#prefixes')).map((row) => row[0])).toEqual(['203.0.113.0/24']);
      expect(fetched.quarantine).not.toBeNull();
      expect((await shown(page, 'quarantine-entries')).value).toBe(fetched.quarantine!.entries);
      expect((await tableRows(page, '#sfds-sources')).map((row) => [row[0], row[1], row[3]])).toEqual(
        sfds.sources.map((row) => [row.source, String(row.flows), String(row.bytes)]),
      );
      expect(await page.locator('#banner').getAttribute('data-state')).toBe('ok');

      // The plot's last point is a point of /status/history, and it drew both levels S went through.
      const plot = page.locator('#plot');
      expect(Number(await plot.getAttribute('data-points'))).toBeGreaterThanOrEqual(2);
      const lastPlottedMs = Number(await plot.getAttribute('data-last-computed-at'));
      const point = (await getJson<HistoryAnswer>('/status/history')).points.find((candidate) => candidate.computedAt === lastPlottedMs);
      expect(point).toBeDefined();
      expect(JSON.parse((await page.locator('#plot-hn').getAttribute('data-last'))!)).toBe(point!.hNormal);
      expect(JSON.parse((await page.locator('#plot-ha').getAttribute('data-last'))!)).toBe(point!.hAbnormal);
      expect(JSON.parse((await page.locator('#plot-s').getAttribute('data-last'))!)).toBe(point!.status);
      const statusPath = (await page.locator('#plot-s').getAttribute('d'))!;
      const levels = new Set([...statusPath.matchAll(/M[\d.]+ ([\d.]+)|V([\d.]+)/g)].map((match) => match[1] ?? match[2]));
      expect(levels.size).toBeGreaterThanOrEqual(2);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('lists the blocked prefixes of /pushback: a fresh verdict and the deny list', async () => {
    // HTTP on the SMTP port earns a reject verdict; in observe mode /pushback lists it as what would be blocked.
    const dialog = await SmtpDialog.connect(proxy!.port, { localAddress: '127.61.0.5' });
    try {
      await dialog.reply();
      dialog.write('GET / HTTP/1.1\r\n');
      await dialog.reply().catch(() => undefined);
    } finally {
      dialog.destroy();
    }
    await expect.poll(async () => (await getJson<{ entries: Array<{ prefix: string }> }>('/pushback')).entries.length, { timeout: 10_000 }).toBe(2);
    const page = await browser!.newPage();
    try {
      const errors = watchErrors(page);
      await page.goto(`${admin}/dashboard?refresh=300`, { timeout: 15_000 });
      await page.locator('#prefixes[data-source="pushback"] tbody tr').first().waitFor({ timeout: 10_000 });
      const rows = await tableRows(page, '#prefixes');
      expect(rows.map((row) => row.slice(0, 3))).toEqual([['127.61.0.5/32', 'reject', 'non-smtp'], ['203.0.113.0/24', 'deny-list', 'deny-list']]);
      expect(rows[0]![3]).toMatch(/^(59\d|600) s$/);
      expect(rows[1]![3]).toBe('permanent');
      expect(await page.locator('#prefixes-source').textContent()).toMatch(/observe mode, what would be blocked/);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it("shows the status, its plot, the top sources and the blocked prefixes on a laptop's first screen (1366x768)", { timeout: 30_000 }, async () => {
    const viewport = { width: 1366, height: 768 };
    const page = await browser!.newPage({ viewport });
    try {
      const errors = watchErrors(page);
      await page.goto(`${admin}/dashboard?refresh=300`, { timeout: 15_000 });
      await page.locator('#plot[data-points]').waitFor({ timeout: 10_000 });
      await page.locator('#prefixes[data-source="pushback"] tbody tr').first().waitFor({ timeout: 10_000 });
      await page.locator('#sfds-sources tbody tr').first().waitFor({ timeout: 10_000 });
      for (const panel of ['#status-card', '#plot-card', '#pair-sources-card', '#sfds-card', '#prefixes-card']) {
        const box = await page.locator(panel).boundingBox();
        expect(box, panel).not.toBeNull();
        expect({ panel, left: box!.x >= 0, top: box!.y >= 0, right: box!.x + box!.width <= viewport.width, bottom: box!.y + box!.height <= viewport.height })
          .toEqual({ panel, left: true, top: true, right: true, bottom: true });
      }
      // Seen without scrolling: the page is at its top, and the plot was drawn, not just laid out.
      expect(await page.evaluate('window.scrollY')).toBe(0);
      expect(Number(await page.locator('#plot').getAttribute('data-points'))).toBeGreaterThanOrEqual(1);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('says the data is stale when the status stops being recomputed', { timeout: 30_000 }, async () => {
    const page = await browser!.newPage();
    try {
      // A status monitor stuck on one tick: the real /status answers, with computedAt held at the first one seen.
      let frozenAt: number | undefined;
      await page.route('**/status', async (route) => {
        const answer = (await (await route.fetch()).json()) as StatusAnswer;
        frozenAt ??= answer.computedAt;
        await route.fulfill({ status: 200, contentType: 'application/json; charset=utf-8', body: JSON.stringify({ ...answer, computedAt: frozenAt }) });
      });
      await page.goto(`${admin}/dashboard?refresh=1`, { timeout: 15_000 });
      await page.locator('#computed-at[data-value]').waitFor({ timeout: 10_000 });
      expect(await page.locator('#banner').getAttribute('data-state')).toBe('ok');
      // Stale after max(5 s, 3 status intervals) without a new computedAt.
      await expect.poll(() => page.locator('#banner').getAttribute('data-state'), { timeout: 15_000, interval: 500 }).toBe('stale');
      expect(await page.locator('#banner').textContent()).toMatch(/^Stale: the status has not been recomputed since \d\d:\d\d:\d\d\.$/);
    } finally {
      await page.close();
    }
  });

  it('refreshes by itself, and says so when the admin listener goes away', { timeout: 30_000 }, async () => {
    const page = await browser!.newPage();
    try {
      await page.goto(`${admin}/?refresh=1`, { timeout: 15_000 });
      const computedAt = page.locator('#computed-at');
      await computedAt.waitFor({ timeout: 10_000 });
      const first = Number(await computedAt.getAttribute('data-value'));
      const normalPairsBefore = (await getJson<StatusAnswer>('/status')).normalPairs;
      await expect.poll(async () => Number(await computedAt.getAttribute('data-value')), { timeout: 10_000 }).toBeGreaterThan(first);
      expect(await page.locator('#refresh-seconds').textContent()).toBe('1');

      const stopping = proxy!;
      proxy = undefined;
      await stopping.stop();
      await expect.poll(() => page.locator('#banner').getAttribute('data-state'), { timeout: 10_000 }).toBe('unreachable');
      expect(await page.locator('#banner').textContent()).toMatch(/^Admin listener unreachable since \d\d:\d\d:\d\d/);
      // The last numbers stay on screen, dimmed.
      expect((await shown(page, 'normal-pairs')).value).toBe(normalPairsBefore);
      expect(await page.locator('body').getAttribute('class')).toContain('stale');
    } finally {
      await page.close();
    }
  });
});
