// The metric names /metrics can hold, taken from src/admin/metrics.ts itself (the registry of a ProxyMetrics,
// read without a scrape, so every registered metric is there, Node's defaults included), and the metric names a PromQL
// expression reads. Used to check that alerts.yml and the Grafana dashboard ask only for metrics that exist.
import { Histogram, Summary } from 'prom-client';
import { ProxyMetrics } from '../../src/admin/metrics.js';

/** Every series name a scrape can have: histograms as their _bucket, _sum and _count series. */
export function registeredMetricNames(): Set<string> {
  // Never scraped, so the sources are never called.
  const metrics = new ProxyMetrics({} as ConstructorParameters<typeof ProxyMetrics>[0]);
  const names = new Set<string>();
  for (const metric of metrics.registry.getMetricsAsArray()) {
    const { name } = metric as unknown as { name: string };
    if (metric instanceof Histogram) for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${name}${suffix}`);
    else if (metric instanceof Summary) for (const suffix of ['', '_sum', '_count']) names.add(`${name}${suffix}`);
    else names.add(name);
  }
  return names;
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'inf', 'nan']);

/**
 * The metric names an expression reads: identifiers that are not functions (followed by "("), keywords,
 * label names (inside {...} or the (...) of by/without/on/ignoring), or parts of strings, numbers and durations.
 * Grafana's template variables ($__rate_interval, ${instance}) are taken out first.
 */
export function metricNamesIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/#.*$/gm, ' ');
  const names: string[] = [];
  for (const match of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*(?=\s*(\(?))/g)) {
    const [word] = match;
    const isFunction = match[1] === '(';
    // After a digit it is a number's unit (offset 1d, 5m, 1e3) or the rest of one.
    const inNumber = /[0-9.]/.test(stripped[(match.index ?? 0) - 1] ?? '');
    if (isFunction || inNumber || KEYWORDS.has(word.toLowerCase())) continue;
    names.push(word);
  }
  return [...new Set(names)];
}
