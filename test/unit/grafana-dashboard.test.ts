// deploy/grafana/smtp-pushback.json, the Grafana dashboard: JSON that Grafana's import takes (a templated
// ${DS_PROMETHEUS} data source input, a recent schemaVersion, unique ids, panels on the 24-column grid without
// overlap), every query reading only metrics src/admin/metrics.ts registers, and the panels an operator needs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { metricNamesIn, registeredMetricNames } from '../support/metric-names.js';

interface Target {
  refId: string;
  expr: string;
  datasource?: { type: string; uid: string };
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
}

interface Dashboard {
  __inputs: { name: string; type: string; pluginId: string }[];
  schemaVersion: number;
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: { query: string } | string; datasource?: { uid: string } }[] };
}

const text = readFileSync(join(import.meta.dirname, '../../deploy/grafana/smtp-pushback.json'), 'utf8');
const dashboard = JSON.parse(text) as Dashboard;
const DATASOURCE = { type: 'prometheus', uid: '${DS_PROMETHEUS}' };

function panel(title: string): Panel {
  const found = dashboard.panels.find((candidate) => candidate.title === title);
  expect(found, `a panel titled "${title}"; there are: ${dashboard.panels.map((p) => p.title).join(', ')}`).toBeDefined();
  return found as Panel;
}

function exprs(found: Panel): string {
  return (found.targets ?? []).map((target) => target.expr).join('\n');
}

describe('the Grafana dashboard', () => {
  it('is importable: a ${DS_PROMETHEUS} input, schemaVersion 39, a uid and unique panel ids', () => {
    expect(dashboard.__inputs).toEqual([expect.objectContaining({ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' })]);
    expect(dashboard.schemaVersion).toBe(39);
    expect(dashboard.uid).toMatch(/^[A-Za-z0-9_-]{1,40}$/);
    expect(dashboard.title).toBe('smtp-pushback');
    const ids = dashboard.panels.map((found) => found.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => Number.isInteger(id) && id > 0)).toBe(true);
  });

  it('queries the templated data source in every panel and target', () => {
    for (const found of dashboard.panels) {
      expect(found.datasource, found.title).toEqual(DATASOURCE);
      expect(found.targets?.length, found.title).toBeGreaterThan(0);
      for (const target of found.targets ?? []) expect(target.datasource, `${found.title} ${target.refId}`).toEqual(DATASOURCE);
      const refIds = (found.targets ?? []).map((target) => target.refId);
      expect(new Set(refIds).size, found.title).toBe(refIds.length);
    }
    for (const variable of dashboard.templating.list) {
      if (variable.type === 'query') expect(variable.datasource, variable.name).toEqual(DATASOURCE);
    }
  });

  it('lays the panels out on the 24-column grid without overlap', () => {
    for (const found of dashboard.panels) {
      const { x, y, w, h } = found.gridPos;
      expect([x, y, w, h].every(Number.isInteger), found.title).toBe(true);
      expect(x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 24, found.title).toBe(true);
    }
    const overlapping = dashboard.panels.flatMap((a, index) => dashboard.panels.slice(index + 1).filter((b) =>
      a.gridPos.x < b.gridPos.x + b.gridPos.w && b.gridPos.x < a.gridPos.x + a.gridPos.w &&
      a.gridPos.y < b.gridPos.y + b.gridPos.h && b.gridPos.y < a.gridPos.y + a.gridPos.h).map((b) => `${a.title} / ${b.title}`));
    expect(overlapping).toEqual([]);
  });

  it('reads only metrics that src/admin/metrics.ts registers', () => {
    const registered = registeredMetricNames();
    const queries = [
      ...dashboard.panels.flatMap((found) => (found.targets ?? []).map((target) => ({ where: `${found.title} ${target.refId}`, expr: target.expr }))),
      ...dashboard.templating.list.map((variable) => ({
        where: `variable ${variable.name}`,
        expr: typeof variable.query === 'string' ? variable.query : variable.query.query,
      })),
    ];
    for (const { where, expr } of queries) {
      // label_values(metric, label) names its metric as a function argument.
      const names = metricNamesIn(expr.replace(/^label_values\(\s*([^,)]+).*$/, '$1'));
      expect(names.length, `${where} reads no metric: ${expr}`).toBeGreaterThan(0);
      expect(names.filter((name) => !registered.has(name)), `${where}: ${expr}`).toEqual([]);
    }
  });

  it('has the panels an operator needs', () => {
    expect(panel('Server status').type).toBe('stat');
    expect(exprs(panel('Server status'))).toMatch(/^smtp_pushback_status\{/);
    expect(panel('Server status over time').type).toBe('timeseries');
    expect(exprs(panel('Server status over time'))).toMatch(/^smtp_pushback_status\{/);

    const entropy = panel('Entropy H(Pn) and H(Pa)');
    expect(entropy.type).toBe('timeseries');
    expect(exprs(entropy)).toContain('smtp_pushback_entropy{');
    expect(exprs(entropy)).toContain('pair="normal"');
    expect(exprs(entropy)).toContain('pair="abnormal"');

    expect(exprs(panel('Sessions'))).toContain('smtp_pushback_sessions_total');
    expect(exprs(panel('Sessions'))).toContain('smtp_pushback_sessions_active');
    expect(exprs(panel('Verdicts by action'))).toMatch(/sum by \(action\) \(rate\(smtp_pushback_verdicts_total/);
    expect(exprs(panel('Blocked prefixes'))).toContain('smtp_pushback_firewall_prefixes');
    expect(exprs(panel('Quarantine'))).toContain('smtp_pushback_quarantine_entries');
    expect(exprs(panel('Quarantine'))).toContain('smtp_pushback_quarantine_events_total');
  });

  it('has no "seed" in it (the method is the entropy status)', () => {
    expect(text).not.toMatch(/seed/i);
  });
});
