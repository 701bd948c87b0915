// The notices section of the policy and the contacts file it may name: contacts validated with
// file:line:reason (bad CIDR, bad email, one contact per network), the relay and sender required once
// notices are on, and the contacts file (YAML or lines) merged after the inline contacts at load.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseContactsText } from '../../src/config/contacts-file.js';
import { formatProblem, loadPolicyFile, parsePolicyText } from '../../src/config/load.js';

function problemsOf(result: { ok: true } | { ok: false; problems: Parameters<typeof formatProblem>[0][] }): string[] {
  return result.ok ? [] : result.problems.map(formatProblem);
}

describe('notices policy', () => {
  it('is off by default, with a 24-hour period', () => {
    const result = parsePolicyText('', 'p.yaml', {});
    expect(result.ok && result.policy.notices).toMatchObject({ enabled: false, periodHours: 24, contacts: [], contactsFile: null, dryRunDir: null });
  });

  it('refuses bad contacts at their line', () => {
    const text = [
      'notices:',
      '  contacts:',
      '    - { cidr: 192.0.2.0/24, organisation: School, email: abuse@school.example }',
      '    - { cidr: 192.0.2.1/24, organisation: Typo, email: noc@isp.example }',
      '    - { cidr: 198.51.100.0/24, organisation: NoMail, email: not-an-email }',
      '    - { cidr: "192.0.2.0/24", organisation: Again, email: again@school.example }',
    ].join('\n');
    expect(problemsOf(parsePolicyText(text, 'p.yaml', {}))).toEqual([
      expect.stringMatching(/^p\.yaml:4:\d+: notices\.contacts\.1\.cidr: host bits are set/),
      expect.stringMatching(/^p\.yaml:5:\d+: notices\.contacts\.2\.email: expected an email address/),
      expect.stringMatching(/^p\.yaml:6:\d+: notices\.contacts\.3\.cidr: 192\.0\.2\.0\/24 already has a contact \(notices\.contacts\.0\)/),
    ]);
  });

  it('needs a sender, and a relay unless it is a dry run, once enabled', () => {
    expect(problemsOf(parsePolicyText('notices:\n  enabled: true\n', 'p.yaml', {}))).toEqual([
      expect.stringMatching(/^p\.yaml:2:\d+: notices\.from: required when notices are enabled/),
      expect.stringMatching(/^p\.yaml:2:\d+: notices\.relay\.address: required when notices are enabled without dryRunDir/),
    ]);
    expect(parsePolicyText('notices: { enabled: true, from: pushback@mx.example, dryRunDir: /tmp/notices }\n', 'p.yaml', {}).ok).toBe(true);
    const relayed = parsePolicyText('notices: { enabled: true, from: pushback@mx.example, relay: { address: "[::1]:587" } }\n', 'p.yaml', {});
    expect(relayed.ok && relayed.policy.notices.relay).toEqual({ address: { host: '::1', port: 587 }, secure: false, auth: null, timeoutMs: 10_000 });
  });
});

describe('contacts file', () => {
  it('reads lines "CIDR EMAIL ORGANISATION" with comments and blank lines', () => {
    const text = '# network        contact                organisation\n192.0.2.0/24     abuse@school.example   Example High School  # the campus\n\n2001:db8:1::/48  noc@isp.example        Example ISP\n';
    expect(parseContactsText(text, 'contacts.txt')).toEqual({
      ok: true,
      contacts: [
        { cidr: '192.0.2.0/24', email: 'abuse@school.example', organisation: 'Example High School' },
        { cidr: '2001:db8:1::/48', email: 'noc@isp.example', organisation: 'Example ISP' },
      ],
    });
  });

  it('reports each bad line with its line and column', () => {
    const text = '192.0.2.0/24 abuse@school.example School\n198.51.100.0/24 nobody\n198.51.100.7/24 noc@isp.example ISP\n203.0.113.0/24 no-at-sign Org\n192.0.2.0/24 other@school.example Again\n';
    const result = parseContactsText(text, 'contacts.txt');
    expect(problemsOf(result)).toEqual([
      'contacts.txt:2:1: expected "CIDR EMAIL ORGANISATION"',
      expect.stringMatching(/^contacts\.txt:3:1: cidr: host bits are set/),
      'contacts.txt:4:16: email: expected an email address (user@domain.example)',
    ]);
    // Duplicates are checked once every line parses.
    expect(problemsOf(parseContactsText('192.0.2.0/24 a@school.example School\n\n192.0.2.0/24 b@school.example Again\n', 'contacts.txt')))
      .toEqual(['contacts.txt:3:1: 192.0.2.0/24 already has a contact (line 1)']);
  });

  it('reads YAML entries like the policy\'s, with problems at their line', () => {
    const ok = parseContactsText('- { cidr: 192.0.2.0/24, organisation: School, email: abuse@school.example, name: Jane Doe }\n', 'contacts.yaml');
    expect(ok).toEqual({ ok: true, contacts: [{ cidr: '192.0.2.0/24', organisation: 'School', email: 'abuse@school.example', name: 'Jane Doe' }] });
    const bad = parseContactsText('- cidr: 192.0.2.0/24\n  organisation: School\n  email: abuse@school.example\n- cidr: 198.51.100.0/24\n  organisation: ISP\n  email: nope\n  phone: 123\n', 'contacts.yml');
    expect(problemsOf(bad)).toEqual([
      expect.stringMatching(/^contacts\.yml:6:\d+: 1\.email: expected an email address/),
      expect.stringMatching(/^contacts\.yml:7:\d+: 1: unknown key "phone"/),
    ]);
  });

  it('refuses a network the policy already has a contact for', () => {
    const inline = [{ cidr: '192.0.2.0/24', organisation: 'School', email: 'abuse@school.example' }];
    expect(problemsOf(parseContactsText('192.0.2.0/24 other@school.example Again\n', 'contacts.txt', inline)))
      .toEqual(['contacts.txt:1:1: 192.0.2.0/24 already has a contact (notices.contacts.0 in the policy)']);
  });

  it('is read relative to the policy file at load, its contacts after the inline ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pushback-contacts-'));
    writeFileSync(join(dir, 'contacts.txt'), '198.51.100.0/24 noc@isp.example Example ISP\n');
    writeFileSync(join(dir, 'policy.yaml'), 'notices:\n  contacts: [{ cidr: 192.0.2.0/24, organisation: School, email: abuse@school.example }]\n  contactsFile: contacts.txt\n');
    const loaded = await loadPolicyFile(join(dir, 'policy.yaml'), {});
    expect(problemsOf(loaded)).toEqual([]);
    expect(loaded.ok && loaded.policy.notices.contacts.map((contact) => contact.email)).toEqual(['abuse@school.example', 'noc@isp.example']);
    expect(loaded.ok && Object.isFrozen(loaded.policy.notices.contacts)).toBe(true);

    writeFileSync(join(dir, 'contacts.txt'), '198.51.100.0/24 nope Example ISP\n');
    expect(problemsOf(await loadPolicyFile(join(dir, 'policy.yaml'), {}))).toEqual([`${join(dir, 'contacts.txt')}:1:17: email: expected an email address (user@domain.example)`]);
    writeFileSync(join(dir, 'policy.yaml'), 'notices: { contactsFile: missing.txt }\n');
    expect(problemsOf(await loadPolicyFile(join(dir, 'policy.yaml'), {}))).toEqual([expect.stringMatching(/missing\.txt: notices\.contactsFile: ENOENT/)]);
  });
});
