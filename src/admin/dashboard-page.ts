// The dashboard page: one self-contained HTML document (inline CSS, the inline script of
// dashboard-script.ts, system fonts, no request beyond the admin listener's own JSON), kept as a string in
// a module so plain `tsc` carries it into dist and the npm package. Its Content-Security-Policy allows
// exactly these two inline blocks, by hash.
import { createHash } from 'node:crypto';
import { DASHBOARD_SCRIPT } from './dashboard-script.js';

const STYLE = `
:root {
  color-scheme: light dark;
  --bg: #f6f7f9; --card: #ffffff; --text: #1d232b; --muted: #5d6773; --line: #d9dee4;
  --safe: #1a7f37; --critical: #a86200; --danger: #c62828; --hn: #1f6feb; --ha: #d1480f; --s: #6e40c9;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #14171b; --card: #1d2126; --text: #e3e7ec; --muted: #97a1ac; --line: #343a41;
    --safe: #3fb950; --critical: #d29922; --danger: #f85149; --hn: #58a6ff; --ha: #f0883e; --s: #b392f0;
  }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 20px 24px; background: var(--bg); color: var(--text);
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px 16px; margin-bottom: 12px; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 13px; margin: 0 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.muted, .empty, #updated, #plot-span, #prefixes-source { color: var(--muted); }
#banner { padding: 8px 12px; border-radius: 6px; margin-bottom: 12px; font-weight: 600; }
#banner[data-state="stale"] { background: color-mix(in srgb, var(--critical) 18%, var(--card)); color: var(--critical); }
#banner[data-state="unreachable"] { background: color-mix(in srgb, var(--danger) 18%, var(--card)); color: var(--danger); }
body.stale main { opacity: .55; }
main { display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; min-width: 0; }
.wide { grid-column: 1 / -1; }
@media (min-width: 960px) { .span2 { grid-column: span 2; } }
.status-card { border-left: 6px solid var(--muted); }
.status-card.safe { border-left-color: var(--safe); }
.status-card.critical { border-left-color: var(--critical); }
.status-card.danger { border-left-color: var(--danger); }
#status { display: block; font-size: 34px; font-weight: 700; line-height: 1.1; margin-bottom: 4px; }
.level.safe { color: var(--safe); }
.level.critical { color: var(--critical); }
.level.danger { color: var(--danger); }
.mode { padding: 2px 8px; border-radius: 10px; font-weight: 600; background: var(--line); }
.mode.enforce { background: color-mix(in srgb, var(--safe) 20%, var(--card)); }
.mode.observe { background: color-mix(in srgb, var(--critical) 20%, var(--card)); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; font-variant-numeric: tabular-nums; }
.figure { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 6px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th:first-child, td.key { text-align: left; }
td:last-child { white-space: normal; }
#prefixes table { width: auto; min-width: 50%; }
#reason { margin-bottom: 6px; }
.scroll { overflow-x: auto; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 18px; margin-bottom: 4px; }
.key-hn, .key-ha, .key-s { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 6px; }
.key-hn { background: var(--hn); } .key-ha { background: var(--ha); } .key-s { background: var(--s); }
svg { width: 100%; height: auto; display: block; }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .tick, svg .note, svg .axis-title { fill: var(--muted); font-size: 12px; }
svg .band.safe { fill: var(--safe); opacity: .12; }
svg .band.critical { fill: var(--critical); opacity: .12; }
svg .band.danger { fill: var(--danger); opacity: .12; }
svg .line { fill: none; stroke-width: 2; stroke-linejoin: round; }
svg .hn { stroke: var(--hn); } svg .ha { stroke: var(--ha); } svg .s { stroke: var(--s); }
svg .effective { stroke: var(--danger); stroke-dasharray: 5 4; }
footer { margin-top: 14px; color: var(--muted); font-size: 12px; }
#policy-error { color: var(--danger); }
/* A laptop's first screen (1366x768) holds the status, its plot, the top sources and what is blocked:
   four columns, the small cards in one row, the plot beside the top sources, the SFDS sources and the
   blocked prefixes under it; their tables scroll inside their cards rather than push the page down. */
@media (min-width: 1200px) {
  body { padding: 12px 20px 20px; }
  header { margin-bottom: 8px; }
  h2 { margin-bottom: 6px; }
  main { grid-template-columns: repeat(4, minmax(0, 1fr)); grid-template-areas:
    "status entropy pairs load" "plot plot plot pairsources" "prefixes prefixes sfds sfds" "quarantine . . ."; }
  .card { padding: 10px 12px; }
  #status { font-size: 28px; }
  .figure { font-size: 19px; }
  dl { gap: 1px 12px; }
  #status-card { grid-area: status; }
  #entropy-card { grid-area: entropy; }
  #pairs-card { grid-area: pairs; }
  #load-card { grid-area: load; }
  #plot-card { grid-area: plot; }
  #pair-sources-card { grid-area: pairsources; }
  #sfds-card { grid-area: sfds; }
  #prefixes-card { grid-area: prefixes; }
  #quarantine-card { grid-area: quarantine; }
  #pair-sources { max-height: 290px; overflow-y: auto; }
  #sfds-sources, #prefixes { max-height: 132px; overflow-y: auto; }
  #prefixes table { min-width: 100%; }
}
`;

const BODY = `
<header>
  <h1>smtp-pushback</h1>
  <span>mode <b id="mode" class="mode"></b> <span id="mode-note" class="muted"></span></span>
  <span id="updated"></span>
</header>
<div id="banner" role="status" data-state="ok" hidden></div>
<main>
  <section class="card status-card" id="status-card">
    <h2>Entropy status of the server</h2>
    <b id="status">loading</b>
    <div id="reason" class="muted"></div>
    <dl>
      <dt>acting on</dt><dd><b id="effective-status"></b> <span id="effective-why" class="muted"></span></dd>
      <dt>computed at</dt><dd id="computed-at"></dd>
      <dt>store</dt><dd id="store"></dd>
    </dl>
  </section>
  <section class="card" id="entropy-card">
    <h2>Entropy of the window</h2>
    <dl>
      <dt>H(Pn)</dt><dd><span id="h-normal" class="figure"></span> bits</dd>
      <dt>H(Pa)</dt><dd><span id="h-abnormal" class="figure"></span> bits</dd>
      <dt>D = H(Pa) &minus; H(Pn)</dt><dd><span id="distance" class="figure"></span> bits</dd>
      <dt>critical while</dt><dd>|D| &le; <span id="delta"></span> bits</dd>
    </dl>
  </section>
  <section class="card" id="pairs-card">
    <h2>Pairs in the window (<span id="window-seconds"></span>)</h2>
    <dl>
      <dt>normal (Pn)</dt><dd id="normal-pairs" class="figure"></dd>
      <dt>abnormal (Pa)</dt><dd id="abnormal-pairs" class="figure"></dd>
      <dt>no source</dt><dd id="untracked-pairs"></dd>
    </dl>
  </section>
  <section class="card" id="load-card">
    <h2>Load</h2>
    <dl>
      <dt>sessions</dt><dd id="sessions-active"></dd>
      <dt>tarpitted</dt><dd id="tarpit-active"></dd>
      <dt>Postfix</dt><dd><span id="upstream-pressure"></span> <span id="upstream-latency" class="muted"></span></dd>
    </dl>
  </section>
  <section class="card wide" id="plot-card">
    <h2>Last hour: H(Pn), H(Pa) and S</h2>
    <div class="legend">
      <span><i class="key-hn"></i>H(Pn) normal pairs <b id="legend-hn"></b></span>
      <span><i class="key-ha"></i>H(Pa) abnormal pairs <b id="legend-ha"></b></span>
      <span><i class="key-s"></i>S status <b id="legend-s"></b></span>
      <span id="plot-span"></span>
    </div>
    <svg id="plot" role="img" aria-label="H(Pn), H(Pa) and status S over the last hour"></svg>
  </section>
  <section class="card" id="pair-sources-card">
    <h2>Top sources by pairs</h2>
    <div id="pair-sources" class="scroll"></div>
  </section>
  <section class="card span2" id="sfds-card">
    <h2>Top sources by SFDS flows (set <span id="sfds-set"></span>)</h2>
    <div id="sfds-sources" class="scroll"></div>
  </section>
  <section class="card" id="quarantine-card">
    <h2>Quarantine</h2>
    <dl id="quarantine"></dl>
  </section>
  <section class="card wide" id="prefixes-card">
    <h2>Blocked prefixes</h2>
    <div id="prefixes-source"></div>
    <div id="prefixes" class="scroll"></div>
  </section>
</main>
<footer>
  Refreshes every <span id="refresh-seconds"></span> s (<code>?refresh=seconds</code>).
  Policy <span id="policy-source"></span>. <span id="policy-error"></span>
</footer>
`;

function sha256Source(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>smtp-pushback</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>${BODY}<script>${DASHBOARD_SCRIPT}</script>
</body>
</html>
`;

/**
 * Same-origin fetches only; the inline style and script by hash rather than 'unsafe-inline', which costs
 * nothing for a fixed page and means nothing injected into it could run or restyle it.
 */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  `script-src ${sha256Source(DASHBOARD_SCRIPT)}`,
  `style-src ${sha256Source(STYLE)}`,
  "img-src 'self' data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');
