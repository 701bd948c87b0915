// deploy/prometheus/alerts.yml as Prometheus reads it: promtool (Debian's prometheus package) checks the rules
// and runs their unit tests (deploy/prometheus/alerts.test.yml), and every expression reads only metrics that
// src/admin/metrics.ts registers, so a renamed metric cannot leave an alert that never fires.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { metricNamesIn, registeredMetricNames } from '../support/metric-names.js';

const ROOT = join(import.meta.dirname, '../..');
const ALERTS = 'deploy/prometheus/alerts.yml';
const promtoolFound = spawnSync('promtool', ['--version'], { encoding: 'utf8' }).error === undefined;
// .ci/install-deps.sh installs promtool, so in CI its absence is a failure, not a skip.
const runPromtool = promtoolFound || process.env.CI === 'true';
if (!runPromtool) console.warn('skipping promtool checks: promtool is not installed (Debian package prometheus; run .ci/install-deps.sh)');

interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const rules = (parse(readFileSync(join(ROOT, ALERTS), 'utf8')) as { groups: { rules: AlertRule[] }[] }).groups.flatMap((group) => group.rules);

function promtool(...args: string[]): { status: number | null; output: string; error?: Error | undefined } {
  const result = spawnSync('promtool', args, { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}`, error: result.error };
}

describe.skipIf(!runPromtool)('alerts.yml through promtool', () => {
  it('passes promtool check rules', () => {
    const result = promtool('check', 'rules', ALERTS);
    expect(result.error, 'promtool (Debian package prometheus; .ci/install-deps.sh installs it)').toBeUndefined();
    expect(result.status, result.output).toBe(0);
    expect(result.output).toContain(`SUCCESS: ${rules.length} rules found`);
  });

  it('passes its unit tests (promtool test rules alerts.test.yml)', () => {
    const result = promtool('test', 'rules', 'deploy/prometheus/alerts.test.yml');
    expect(result.status, result.output).toBe(0);
    expect(result.output).toContain('SUCCESS');
  });
});

describe('alerts.yml', () => {
  it('has the alerts the operator needs', () => {
    expect(rules.map((rule) => rule.alert).sort()).toEqual([
      'SmtpPushbackQuarantineBacklogGrowing',
      'SmtpPushbackReleaseFailing',
      'SmtpPushbackSharedStoreDegraded',
      'SmtpPushbackStatusDanger',
      'SmtpPushbackUpstreamLatencyHigh',
    ]);
    const status = rules.find((rule) => rule.alert === 'SmtpPushbackStatusDanger');
    expect(status?.expr.trim()).toBe('smtp_pushback_status == -1');
    expect(status?.for).toBe('1m');
    for (const rule of rules) {
      expect(rule.labels?.severity, rule.alert).toMatch(/^(warning|critical)$/);
      expect(rule.annotations?.summary, rule.alert).toBeTruthy();
      expect(rule.for, rule.alert).toBeTruthy();
    }
  });

  it('reads only metrics that src/admin/metrics.ts registers', () => {
    const registered = registeredMetricNames();
    for (const rule of rules) {
      const names = metricNamesIn(rule.expr);
      expect(names.length, `${rule.alert} reads no metric`).toBeGreaterThan(0);
      expect(names.filter((name) => !registered.has(name)), rule.alert).toEqual([]);
    }
  });
});
