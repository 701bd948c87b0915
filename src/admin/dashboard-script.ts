// The dashboard's own script, as the text the page inlines: plain browser JavaScript, no framework and
// nothing fetched but the admin listener's JSON (/status, /status/history, /sources, /pushback). It
// refreshes every few seconds (?refresh=seconds), draws the last hour as inline SVG, and says when the data
// is stale or the listener unreachable. Every value is written with textContent, never as HTML: sources,
// prefixes and reasons come from the network. Kept free of backticks so it can live in this template.
export const DASHBOARD_SCRIPT = String.raw`
(() => {
  'use strict';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const STATUS_WORDS = new Map([[1, 'safe'], [0, 'critical'], [-1, 'danger']]);
  const params = new URLSearchParams(location.search);
  const refreshSeconds = Math.min(300, Math.max(1, Number(params.get('refresh')) || 2));
  const refreshMs = refreshSeconds * 1000;
  const fetchTimeoutMs = Math.min(5000, refreshMs);
  const view = {
    points: [],
    historySeconds: 3600,
    statusIntervalMs: 1000,
    sampleMs: 1000,
    computedAt: undefined,
    computedAtChangedMs: undefined,
    failingSinceMs: undefined,
    lastError: '',
  };

  const byId = (id) => document.getElementById(id);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function svgElement(tag, attributes, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  /** Shows text and keeps the raw value beside it (data-value, JSON) for tests and copy-paste. */
  function show(id, text, value) {
    const node = byId(id);
    node.textContent = text;
    node.dataset.value = JSON.stringify(value === undefined ? null : value);
  }

  const pad = (n) => String(n).padStart(2, '0');
  const clock = (ms) => {
    const date = new Date(ms);
    return pad(date.getHours()) + ':' + pad(date.getMinutes()) + ':' + pad(date.getSeconds());
  };
  const bits = (value) => (typeof value === 'number' && Number.isFinite(value) ? value.toFixed(3) : '\u2013');
  const statusWord = (status) => STATUS_WORDS.get(status) || 'unknown';
  const statusClass = (status) => 'level ' + statusWord(status);

  function byteSize(bytes) {
    if (bytes < 1024) return bytes + ' B';
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let value = bytes / 1024;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return value.toFixed(1) + ' ' + units[unit];
  }

  /** D as /status gives it: null is an infinity whose sign follows from which count is zero. */
  function distanceText(status) {
    if (status.distance !== null) return bits(status.distance);
    return status.abnormalPairs === 0 ? '+\u221e' : '\u2212\u221e';
  }

  async function getJson(path) {
    const response = await fetch(path, { cache: 'no-store', signal: AbortSignal.timeout(fetchTimeoutMs) });
    const body = response.headers.get('content-type')?.startsWith('application/json') ? await response.json() : undefined;
    return { httpStatus: response.status, body };
  }

  function table(container, headers, rows, emptyText) {
    container.replaceChildren();
    if (rows.length === 0) {
      container.append(element('p', emptyText, 'empty'));
      return;
    }
    const head = element('tr');
    for (const header of headers) head.append(element('th', header));
    const body = element('tbody');
    for (const row of rows) {
      const line = element('tr');
      row.forEach((cell, column) => line.append(element('td', cell, column === 0 ? 'key' : 'num')));
      body.append(line);
    }
    const thead = element('thead');
    thead.append(head);
    const node = element('table');
    node.append(thead, body);
    container.append(node);
  }

  function renderStatus(status) {
    const statusNode = byId('status');
    show('status', status.status + ' ' + statusWord(status.status), status.status);
    statusNode.className = statusClass(status.status);
    byId('status-card').className = 'card status-card ' + statusWord(status.status);
    show('reason', status.reason === 'quiet' ? 'quiet: fewer than ' + status.minPairs + ' pairs in the window, reported safe' : 'decided by the pairs', status.reason);
    show('effective-status', status.effectiveStatus + ' ' + statusWord(status.effectiveStatus), status.effectiveStatus);
    byId('effective-status').className = statusClass(status.effectiveStatus);
    byId('effective-why').textContent = status.effectiveStatus === status.status ? '' : '(Postfix under pressure)';
    show('h-normal', bits(status.hNormal), status.hNormal);
    show('h-abnormal', bits(status.hAbnormal), status.hAbnormal);
    show('distance', distanceText(status), status.distance);
    show('delta', String(status.deltaBits), status.deltaBits);
    show('normal-pairs', String(status.normalPairs), status.normalPairs);
    show('abnormal-pairs', String(status.abnormalPairs), status.abnormalPairs);
    show('untracked-pairs', String(status.untrackedPairs), status.untrackedPairs);
    show('window-seconds', status.windowSeconds + ' s', status.windowSeconds);
    show('store', status.store + (status.degraded ? ': DEGRADED, this node\u2019s own view' : ''), status.store);
    byId('store').className = status.degraded ? 'level danger' : '';
    show('mode', status.mode, status.mode);
    byId('mode').className = 'mode ' + status.mode;
    byId('mode-note').textContent = status.mode === 'observe' ? 'verdicts are logged, nothing is enforced' : 'verdicts are carried out';
    show('computed-at', status.computedAt ? clock(status.computedAt) : 'not yet', status.computedAt);
    show('sessions-active', String(status.sessionsActive), status.sessionsActive);
    show('tarpit-active', String(status.tarpitActive), status.tarpitActive);
    const pressure = status.upstreamPressure;
    show('upstream-pressure', pressure.pressured ? 'under pressure' : 'normal', pressure.pressured);
    byId('upstream-pressure').className = pressure.pressured ? 'level critical' : '';
    byId('upstream-latency').textContent = pressure.medianLatencyMs === null ? 'no recent replies' : 'median ' + Math.round(pressure.medianLatencyMs) + ' ms over ' + pressure.replies + ' replies';
    table(byId('pair-sources'), ['source', 'normal', 'abnormal'],
      status.topSources.map((source) => [source.source || '(untracked)', source.normal, source.abnormal]),
      'no pairs in the window');
    renderQuarantine(status.quarantine);
    const policy = status.policy;
    byId('policy-source').textContent = policy.source + ', ' + policy.reloads + ' reload(s)';
    byId('policy-error').textContent = policy.lastError ? 'last reload refused: ' + policy.lastError.join('; ') : '';
  }

  function renderQuarantine(quarantine) {
    const list = byId('quarantine');
    list.replaceChildren();
    byId('quarantine-card').dataset.available = String(quarantine !== null);
    if (quarantine === null) {
      list.append(element('p', 'spool unavailable: quarantine verdicts defer (450) instead', 'level critical'));
      return;
    }
    const release = quarantine.release;
    const gate = release.gate.allowed ? 'open (' + release.gate.reason + ')' : 'closed: ' + release.gate.reason;
    const last = release.lastTick;
    const outcomes = last ? Object.entries(last.outcomes).map(([kind, count]) => count + ' ' + kind).join(', ') : '';
    const rows = [
      ['entries', quarantine.entries + ' (' + byteSize(quarantine.bytes) + ')', 'quarantine-entries', quarantine.entries],
      ['held', quarantine.byState.held, 'quarantine-held', quarantine.byState.held],
      ['releasing', quarantine.byState.releasing, 'quarantine-releasing', quarantine.byState.releasing],
      ['released', quarantine.byState.released, 'quarantine-released', quarantine.byState.released],
      ['rejected', quarantine.byState.rejected, 'quarantine-rejected', quarantine.byState.rejected],
      ['release gate', gate, 'quarantine-gate', release.gate.allowed],
      ['in flight', release.inFlight, 'quarantine-in-flight', release.inFlight],
      ['last tick', last ? clock(last.finishedAtMs) + (outcomes ? ': ' + outcomes : '') : 'none yet', 'quarantine-last-tick', last ? last.finishedAtMs : null],
    ];
    for (const [label, text, id, value] of rows) {
      const term = element('dt', label);
      const detail = element('dd', text);
      detail.id = id;
      detail.dataset.value = JSON.stringify(value);
      list.append(term, detail);
    }
  }

  function renderSources(result) {
    const container = byId('sfds-sources');
    if (result.status !== 'fulfilled' || result.value.httpStatus !== 200) {
      container.replaceChildren(element('p', 'could not read /sources', 'empty'));
      return;
    }
    const rows = result.value.body.sources;
    byId('sfds-set').textContent = rows.length ? rows[0].set : 'first';
    table(container, ['source', 'flows', 'packets', 'bytes', 'B/packet', 'flooding periods', 'flows/period'],
      rows.map((row) => [row.source, row.flows, row.packets, row.bytes,
        row.meanPacketBytes.toFixed(1), row.durationPeriods, row.flowsPerPeriod.toFixed(1)]),
      'no sources in the current SFDS periods');
  }

  /** /pushback when this proxy serves it; otherwise this node's suspect prefixes from /status, saying so. */
  function renderPrefixes(result, status) {
    const container = byId('prefixes');
    const note = byId('prefixes-source');
    if (result.status === 'fulfilled' && result.value.httpStatus === 200) {
      const answer = result.value.body;
      container.dataset.source = 'pushback';
      note.textContent = answer.enforced
        ? 'from /pushback: exported to the firewall' + (answer.stale ? ' (stale: the shared store cannot be read)' : '')
        : 'from /pushback: observe mode, what would be blocked (nothing is exported)';
      if (answer.total > answer.entries.length) note.textContent += ' (first ' + answer.entries.length + ' of ' + answer.total + ')';
      table(container, ['prefix', 'action', 'detector', 'expires in', 'reasons'],
        answer.entries.map((entry) => [entry.prefix, entry.action, entry.detector,
          entry.ttlSeconds === null ? 'permanent' : entry.ttlSeconds + ' s', entry.reasons.join('; ')]),
        'no prefix blocked');
      return;
    }
    if (result.status === 'fulfilled' && result.value.httpStatus === 503) {
      container.dataset.source = 'pushback';
      note.textContent = 'the blocked set has not been read yet';
      container.replaceChildren();
      return;
    }
    if (result.status === 'fulfilled' && result.value.httpStatus === 404) {
      container.dataset.source = 'status';
      note.textContent = 'no /pushback on this proxy: this node\u2019s suspect prefixes from /status';
      table(container, ['prefix', 'family', 'members'],
        status.suspectPrefixes.map((prefix) => [prefix.prefix, prefix.family, prefix.members]),
        'no suspect prefix');
      return;
    }
    container.dataset.source = 'error';
    note.textContent = 'could not read /pushback';
    container.replaceChildren();
  }

  function mergeHistory(result) {
    if (result.status !== 'fulfilled' || result.value.httpStatus !== 200) return;
    const answer = result.value.body;
    view.historySeconds = answer.historySeconds;
    view.statusIntervalMs = answer.statusIntervalMs;
    view.sampleMs = answer.sampleMs;
    const lastMs = view.points.length ? view.points[view.points.length - 1].computedAt : -Infinity;
    for (const point of answer.points) if (point.computedAt > lastMs) view.points.push(point);
    if (view.points.length === 0) return;
    const oldestMs = view.points[view.points.length - 1].computedAt - view.historySeconds * 1000;
    const firstKept = view.points.findIndex((point) => point.computedAt > oldestMs);
    if (firstKept > 0) view.points.splice(0, firstKept);
  }

  function historyUrl() {
    const last = view.points[view.points.length - 1];
    return last ? 'status/history?sinceMs=' + last.computedAt : 'status/history';
  }

  function tickStep(spanMs) {
    for (const seconds of [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) if (spanMs / (seconds * 1000) <= 6) return seconds * 1000;
    return 3600000;
  }

  /** A line through the points; a gap of several samples (a restart, a stalled tick) breaks it. */
  function linePath(points, x, y, step) {
    const gapMs = 3 * Math.max(view.sampleMs, view.statusIntervalMs);
    let d = '';
    let previous;
    for (const point of points) {
      const px = x(point.computedAt).toFixed(1);
      const py = y(point).toFixed(1);
      if (!previous || point.computedAt - previous.computedAt > gapMs) d += 'M' + px + ' ' + py;
      else d += step ? 'H' + px + 'V' + py : 'L' + px + ' ' + py;
      previous = point;
    }
    return d;
  }

  function drawPlot() {
    const svg = byId('plot');
    const points = view.points;
    // One unit per CSS pixel, so labels keep their size on a narrow screen (redrawn at every refresh).
    const width = Math.max(480, Math.round(svg.clientWidth || 960));
    const left = 78;
    const right = 12;
    const top = 12;
    // Heights kept small enough that on a 1366x768 screen the plot leaves room for the tables below it.
    const entropyHeight = 150;
    const statusTop = top + entropyHeight + 24;
    const statusHeight = 54;
    const axisY = statusTop + statusHeight + 20;
    svg.setAttribute('viewBox', '0 0 ' + width + ' ' + (axisY + 4));
    svg.replaceChildren();
    svg.dataset.points = String(points.length);
    if (points.length === 0) {
      svg.append(svgElement('text', { x: width / 2, y: top + entropyHeight / 2, 'text-anchor': 'middle', class: 'note' }, 'no status computed yet'));
      return;
    }
    const newest = points[points.length - 1];
    svg.dataset.lastComputedAt = String(newest.computedAt);
    // At least a minute on the axis, so a young history fills in from the right instead of stretching.
    const endMs = newest.computedAt;
    const startMs = Math.min(points[0].computedAt, endMs - 60000);
    const x = (ms) => left + ((ms - startMs) / (endMs - startMs)) * (width - left - right);
    const highestBits = points.reduce((most, point) => Math.max(most, point.hNormal, point.hAbnormal), 0);
    const maxBits = Math.max(1, Math.ceil(highestBits));
    const bitStep = Math.max(1, Math.ceil(maxBits / 5));
    const yBits = (value) => top + entropyHeight - (value / maxBits) * entropyHeight;
    const yStatus = (value) => statusTop + ((1 - value) / 2) * statusHeight;

    for (let value = 0; value <= maxBits; value += bitStep) {
      svg.append(svgElement('line', { x1: left, x2: width - right, y1: yBits(value), y2: yBits(value), class: 'grid' }));
      svg.append(svgElement('text', { x: left - 8, y: yBits(value) + 4, 'text-anchor': 'end', class: 'tick' }, value));
    }
    svg.append(svgElement('text', { x: 14, y: top + entropyHeight / 2, class: 'axis-title', transform: 'rotate(-90 14 ' + (top + entropyHeight / 2) + ')', 'text-anchor': 'middle' }, 'bits'));
    for (const [value, word] of STATUS_WORDS) {
      svg.append(svgElement('rect', { x: left, width: width - left - right, y: yStatus(value) - statusHeight / 4, height: statusHeight / 2, class: 'band ' + word }));
      svg.append(svgElement('text', { x: left - 8, y: yStatus(value) + 4, 'text-anchor': 'end', class: 'tick' }, value + ' ' + word));
    }
    const stepMs = tickStep(endMs - startMs);
    // Not too near either end, where a label would run into the status labels or off the plot.
    const marginMs = (endMs - startMs) / 25;
    for (let ms = Math.ceil((startMs + marginMs) / stepMs) * stepMs; ms <= endMs - marginMs; ms += stepMs) {
      svg.append(svgElement('line', { x1: x(ms), x2: x(ms), y1: top, y2: statusTop + statusHeight, class: 'grid' }));
      svg.append(svgElement('text', { x: x(ms), y: axisY, 'text-anchor': 'middle', class: 'tick' }, stepMs >= 60000 ? clock(ms).slice(0, 5) : clock(ms)));
    }
    const series = [
      ['plot-hn', 'line hn', false, (point) => yBits(point.hNormal), newest.hNormal],
      ['plot-ha', 'line ha', false, (point) => yBits(point.hAbnormal), newest.hAbnormal],
      ['plot-s', 'line s', true, (point) => yStatus(point.status), newest.status],
    ];
    // The acted-on status only when pressure ever lowered it: otherwise it would hide under S.
    if (points.some((point) => point.effectiveStatus !== point.status)) {
      series.push(['plot-effective', 'line effective', true, (point) => yStatus(point.effectiveStatus), newest.effectiveStatus]);
    }
    for (const [id, className, step, y, last] of series) {
      const path = svgElement('path', { id, class: className, d: linePath(points, x, y, step) });
      path.dataset.last = JSON.stringify(last);
      svg.append(path);
    }
    byId('legend-hn').textContent = bits(newest.hNormal);
    byId('legend-ha').textContent = bits(newest.hAbnormal);
    byId('legend-s').textContent = newest.status + ' ' + statusWord(newest.status);
    byId('plot-span').textContent = 'from ' + clock(points[0].computedAt) + ' to ' + clock(endMs) + ', ' + points.length + ' points';
  }

  /** The banner: reachable and fresh, stale (no new status computed lately), or unreachable. */
  function renderHealth(nowMs) {
    const banner = byId('banner');
    let state = 'ok';
    let text = '';
    if (view.failingSinceMs !== undefined) {
      state = 'unreachable';
      text = 'Admin listener unreachable since ' + clock(view.failingSinceMs) + ' (' + view.lastError + '); showing the last data received.';
    } else if (view.computedAt === 0) {
      state = 'stale';
      text = 'No status computed yet.';
    } else if (view.computedAtChangedMs !== undefined && nowMs - view.computedAtChangedMs > Math.max(5000, 3 * view.statusIntervalMs)) {
      state = 'stale';
      text = 'Stale: the status has not been recomputed since ' + clock(view.computedAt) + '.';
    }
    banner.dataset.state = state;
    banner.textContent = text;
    banner.hidden = state === 'ok';
    document.body.classList.toggle('stale', state !== 'ok');
    byId('updated').textContent = view.computedAt ? 'status computed ' + clock(view.computedAt) : '';
  }

  async function refresh() {
    const [status, history, sources, pushback] = await Promise.allSettled([
      getJson('status'),
      getJson(historyUrl()),
      getJson('sources?top=10'),
      getJson('pushback?limit=100'),
    ]);
    const nowMs = Date.now();
    if (status.status === 'fulfilled' && status.value.httpStatus === 200) {
      const body = status.value.body;
      view.failingSinceMs = undefined;
      if (body.computedAt !== view.computedAt) view.computedAtChangedMs = nowMs;
      view.computedAt = body.computedAt;
      mergeHistory(history);
      renderStatus(body);
      renderSources(sources);
      renderPrefixes(pushback, body);
      drawPlot();
    } else {
      view.failingSinceMs ??= nowMs;
      view.lastError = status.status === 'fulfilled' ? 'HTTP ' + status.value.httpStatus : String(status.reason && status.reason.message || status.reason);
    }
    renderHealth(nowMs);
  }

  async function loop() {
    try {
      await refresh();
    } finally {
      setTimeout(loop, refreshMs);
    }
  }

  byId('refresh-seconds').textContent = String(refreshSeconds);
  loop();
})();
`;
