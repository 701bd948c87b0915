// Policy loading: defaults, environment overrides, and problems reported with file, line and reason.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultPolicy, formatProblem, loadPolicyFile, parsePolicyText } from '../../src/config/load.js';

describe('policy', () => {
  it('has working built-in defaults', () => {
    const result = defaultPolicy({});
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.policy.server.listen).toEqual({ host: '127.0.0.1', port: 2525 });
    expect(result.policy.upstream.address).toEqual({ host: '127.0.0.1', port: 10025 });
    expect(result.policy.admin.listen).toEqual({ host: '127.0.0.1', port: 8025 });
    expect(result.policy.state.redisUrl).toBeNull();
    expect(Object.isFrozen(result.policy.limits)).toBe(true);
  });

  it('lets the PUSHBACK_* environment override the file', () => {
    const result = parsePolicyText('server:\n  listen: 0.0.0.0:25\n', 'p.yaml', {
      PUSHBACK_LISTEN: '[::1]:2600',
      PUSHBACK_UPSTREAM: '127.0.0.2:10026',
      PUSHBACK_ADMIN: '127.0.0.1:9000',
      PUSHBACK_REDIS_URL: 'redis://127.0.0.1:6379/0',
      PUSHBACK_SPOOL_DIR: '/tmp/spool',
    });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.policy.server.listen).toEqual({ host: '::1', port: 2600 });
    expect(result.policy.upstream.address).toEqual({ host: '127.0.0.2', port: 10026 });
    expect(result.policy.admin.listen.port).toBe(9000);
    expect(result.policy.state.redisUrl).toBe('redis://127.0.0.1:6379/0');
    expect(result.policy.quarantine.spoolDir).toBe('/tmp/spool');
  });

  it('takes the notice relay password from PUSHBACK_NOTICES_RELAY_PASS, and names the variable when the user is missing', () => {
    const withUser = parsePolicyText('notices:\n  relay:\n    auth: { user: pushback, pass: "" }\n', 'p.yaml', { PUSHBACK_NOTICES_RELAY_PASS: 's3cret' });
    expect(withUser.ok && withUser.policy.notices.relay.auth).toEqual({ user: 'pushback', pass: 's3cret' });
    const withoutUser = parsePolicyText('', 'p.yaml', { PUSHBACK_NOTICES_RELAY_PASS: 's3cret' });
    expect(withoutUser.ok).toBe(false);
    if (withoutUser.ok) return;
    expect(withoutUser.problems.map(formatProblem)).toEqual([expect.stringMatching(/^p\.yaml:1:1: notices\.relay\.auth\.user: required: the user to log in as \(PUSHBACK_NOTICES_RELAY_PASS gives only the password\)$/)]);
  });

  it('reports every problem with its line and reason', () => {
    const text = [
      'server:', //               1
      '  listen: nowhere', //     2
      '  maxClients: -3', //      3
      'limits:', //               4
      '  maxRecipients: many', // 5
      '  colour: blue', //        6
      'upstream:', //             7
      '  xclient: sometimes', //  8
    ].join('\n');
    const result = parsePolicyText(text, 'policy.yaml', {});
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const lines = result.problems.map(formatProblem);
    expect(lines).toEqual(expect.arrayContaining([
      expect.stringMatching(/^policy\.yaml:2:\d+: server\.listen: expected host:port/),
      expect.stringMatching(/^policy\.yaml:3:\d+: server\.maxClients: /),
      expect.stringMatching(/^policy\.yaml:5:\d+: limits\.maxRecipients: /),
      expect.stringMatching(/^policy\.yaml:6:\d+: limits: unknown key "colour"/),
      expect.stringMatching(/^policy\.yaml:8:\d+: upstream\.xclient: /),
    ]));
    expect(lines).toHaveLength(5);
  });

  it('reports YAML syntax errors and bad environment values by their source', () => {
    const syntax = parsePolicyText('server:\n  listen: [unclosed\n', 'bad.yaml', {});
    expect(syntax.ok).toBe(false);
    if (!syntax.ok) expect(formatProblem(syntax.problems[0]!)).toMatch(/^bad\.yaml:\d+:\d+: /);
    const env = parsePolicyText('', 'ok.yaml', { PUSHBACK_LISTEN: 'no-port' });
    expect(env.ok).toBe(false);
    if (!env.ok) expect(formatProblem(env.problems[0]!)).toMatch(/^environment PUSHBACK_LISTEN: server\.listen: expected host:port/);
  });

  it('loads the sample config/policy.yaml without problems, and it shows exactly the built-in defaults', async () => {
    const result = await loadPolicyFile(join(import.meta.dirname, '../../config/policy.yaml'), {});
    expect(result.ok ? [] : result.problems.map(formatProblem)).toEqual([]);
    const defaults = defaultPolicy({});
    if (result.ok && defaults.ok) expect(result.policy).toEqual(defaults.policy);
  });

  it('refuses a bad CIDR in the allow or deny list at its line', () => {
    const result = parsePolicyText('pushback:\n  allow:\n    - 192.0.2.0/24\n    - 192.0.2.1/24\n  deny: [not-an-address]\n', 'p.yaml', {});
    expect(result.ok).toBe(false);
    if (!result.ok) {
      const lines = result.problems.map(formatProblem);
      expect(lines).toEqual([
        expect.stringMatching(/^p\.yaml:4:\d+: pushback\.allow\.1: /),
        expect.stringMatching(/^p\.yaml:5:\d+: pushback\.deny\.0: /),
      ]);
    }
  });

  it('takes dns.servers as address or address:port, and refuses host names and bad ports at their line', () => {
    const good = parsePolicyText('dns:\n  servers: ["127.0.0.1:5353", "::1", "[2001:db8::53]:53", 192.0.2.53]\n  timeoutMs: 500\n', 'p.yaml', {});
    expect(good.ok ? good.policy.dns : good.problems).toEqual({
      servers: [{ host: '127.0.0.1', port: 5353 }, { host: '::1', port: 53 }, { host: '2001:db8::53', port: 53 }, { host: '192.0.2.53', port: 53 }],
      timeoutMs: 500,
    });
    const defaults = defaultPolicy({});
    expect(defaults.ok ? defaults.policy.dns : undefined).toEqual({ servers: [], timeoutMs: 1_000 });
    const bad = parsePolicyText('dns:\n  servers:\n    - resolver.example:53\n    - 127.0.0.1:0\n  timeoutMs: 0\n', 'p.yaml', {});
    expect(bad.ok ? [] : bad.problems.map(formatProblem)).toEqual([
      expect.stringMatching(/^p\.yaml:3:\d+: dns\.servers\.0: expected an IP address or address:port/),
      expect.stringMatching(/^p\.yaml:4:\d+: dns\.servers\.1: expected an IP address or address:port/),
      expect.stringMatching(/^p\.yaml:5:\d+: dns\.timeoutMs: /),
    ]);
  });

  it('reports an unreadable file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pushback-config-'));
    writeFileSync(join(dir, 'empty.yaml'), '');
    expect((await loadPolicyFile(join(dir, 'empty.yaml'), {})).ok).toBe(true);
    const missing = await loadPolicyFile(join(dir, 'missing.yaml'), {});
    expect(missing.ok).toBe(false);
  });
});
