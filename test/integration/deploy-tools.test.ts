// The deployment files through the real tools: systemd-analyze verifies the units and rates their
// exposure, nft checks the nftables example and loads it with the proxy's export in both orders in a
// private network namespace, the loader refuses exports that reach beyond the sets (a corpus of hostile
// files under a UTF-8 and the C locale) and hands nft only a script of its own, postconf reads
// the Postfix snippets and the container's configuration, and the image's health check asks a
// running proxy. CI installs systemd, nftables and Postfix (.ci/install-deps.sh): there a missing
// tool fails; elsewhere it skips with the reason. nft needs CAP_NET_ADMIN and a namespace needs
// CAP_SYS_ADMIN: without them those checks skip, saying so.
import { execFile, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { toolDirs } from '../support/postfix-config.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { readRepoFile, REPO, repoPath } from '../support/deploy-files.js';
import { freePort } from '../support/redis-server.js';
import { renderNftables } from '../../src/enforce/blocked-prefixes.js';

const runAsync = promisify(execFile);
const CI = process.env.CI === 'true';
const LOADER = repoPath('deploy/nftables/load-blocked-sets.sh');
const NFT_EXAMPLE = repoPath('deploy/nftables/smtp-pushback.nft');

/** What the proxy writes to pushback.firewall.nftablesFile: the firewall export's own renderer. */
const EXPORT_NOW_MS = Date.UTC(2026, 10, 23, 12, 0, 0);
const EXPORT = renderNftables([
  { prefix: '192.0.2.0/24', family: 'ipv4', lengthBits: 24, action: 'reject', detector: 'prefix', reasons: [], expiresAtMs: EXPORT_NOW_MS + 600_000 },
  { prefix: '198.51.100.7/32', family: 'ipv4', lengthBits: 32, action: 'reject', detector: 'non-smtp', reasons: [], expiresAtMs: EXPORT_NOW_MS + 300_000 },
  { prefix: '2001:db8:7::/48', family: 'ipv6', lengthBits: 48, action: 'reject', detector: 'prefix', reasons: [], expiresAtMs: EXPORT_NOW_MS + 600_000 },
], { table: 'smtp_pushback', setV4: 'blocked_v4', setV6: 'blocked_v6' }, EXPORT_NOW_MS);

function findTool(name: string): string | undefined {
  const dirs = [...toolDirs, ...(process.env.PATH ?? '').split(':').filter(Boolean)];
  return dirs.map((dir) => join(dir, name)).find((path) => existsSync(path));
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(command, args, { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });
}

/** Where a tool is missing: skip with the reason, except on CI, which installs it. */
function toolOrSkip(name: string, debianPackage: string): string | undefined {
  const path = findTool(name);
  if (!path && !CI) console.warn(`skipping: ${name} is not installed (Debian package ${debianPackage}; .ci/install-deps.sh installs it)`);
  return path ?? (CI ? `/missing/${name}` : undefined);
}

function scratch(): string {
  return mkdtempSync(join(tmpdir(), 'pushback-deploy-'));
}

const systemdAnalyze = toolOrSkip('systemd-analyze', 'systemd');

describe.skipIf(!systemdAnalyze)('systemd units', () => {
  /** The units with the install paths pointed at this checkout, so verify finds the programs they run. */
  function installedUnits(): { dir: string; units: string[] } {
    const dir = scratch();
    const units = ['smtp-pushback.service', 'smtp-pushback-firewall.path', 'smtp-pushback-firewall.service'];
    for (const unit of units) {
      const text = readRepoFile('deploy/systemd', unit).replaceAll('/opt/smtp-pushback', REPO).replaceAll('/usr/bin/node', process.execPath);
      writeFileSync(join(dir, unit), text);
    }
    return { dir, units: units.map((unit) => join(dir, unit)) };
  }

  it('pass systemd-analyze verify without a word about them', () => {
    const { dir, units } = installedUnits();
    const result = run(systemdAnalyze!, ['verify', ...units]);
    const aboutOurs = `${result.stdout}${result.stderr}`.split('\n').filter((line) => line.includes(dir) || /smtp-pushback/.test(line));
    expect(aboutOurs).toEqual([]);
    expect(result.status).toBe(0);
  });

  it('rate the proxy and the firewall loader as exposed at most 2.0 of 10 (systemd-analyze security)', () => {
    const { units } = installedUnits();
    for (const unit of [units[0]!, units[2]!]) {
      const result = run(systemdAnalyze!, ['security', '--offline=true', '--no-pager', unit]);
      const exposure = /Overall exposure level for \S+: (\d+\.\d+)/.exec(result.stdout)?.[1];
      expect(exposure, `${unit}: ${result.stdout.slice(-300)}${result.stderr}`).toBeDefined();
      expect(Number(exposure)).toBeLessThanOrEqual(2.0);
    }
  });
});

/**
 * The script the loader writes for nft from the elements it read: the declarations of
 * deploy/nftables/smtp-pushback.nft, both sets flushed, then the elements. Never the proxy's own text.
 */
function loaderScript(v4: readonly string[], v6: readonly string[]): string {
  const declarations = [
    'table inet smtp_pushback {',
    '\tset blocked_v4 {', '\t\ttype ipv4_addr', '\t\tflags interval, timeout', '\t}',
    '\tset blocked_v6 {', '\t\ttype ipv6_addr', '\t\tflags interval, timeout', '\t}',
    '}',
    'flush set inet smtp_pushback blocked_v4',
    'flush set inet smtp_pushback blocked_v6',
  ];
  const adds = ([['blocked_v4', v4], ['blocked_v6', v6]] as const)
    .filter(([, elements]) => elements.length > 0)
    .map(([set, elements]) => `add element inet smtp_pushback ${set} { ${elements.join(', ')} }`);
  return `${[...declarations, ...adds].join('\n')}\n`;
}

const EXPORT_LOADED = loaderScript(['192.0.2.0/24 timeout 600s', '198.51.100.7 timeout 300s'], ['2001:db8:7::/48 timeout 600s']);

/** The environment without any locale of the caller's, plus the one under test. */
function withLocale(locale: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'LANG' && name !== 'LANGUAGE' && !name.startsWith('LC_')));
  return { ...env, ...locale };
}

interface LoaderRun {
  status: number | null;
  stderr: string;
  /** Every call of nft, its arguments and the script it was given. */
  calls: Array<{ args: string; script: string }>;
}

/** Runs the loader with a stand-in for nft that records each call and the script it was handed. */
function runLoader(content: string | Buffer | ((dir: string) => string), env: NodeJS.ProcessEnv = process.env): LoaderRun {
  const dir = scratch();
  let file = join(dir, 'pushback.nft');
  if (typeof content === 'function') file = content(dir);
  else writeFileSync(file, content);
  const fakeNft = join(dir, 'nft');
  writeFileSync(fakeNft, `#!/bin/sh\nn=$(ls "${dir}" | grep -c '[.]args$')\necho "$*" > "${dir}/call-$n.args"\nfor script; do :; done\ncat "$script" > "${dir}/call-$n.script"\n`);
  chmodSync(fakeNft, 0o755);
  const result = spawnSync(LOADER, [file], { timeout: 30_000, env: { ...env, NFT: fakeNft } });
  const calls = readdirSync(dir).filter((name) => name.endsWith('.args')).sort().map((name) => {
    const stem = join(dir, name.slice(0, -'.args'.length));
    return { args: readFileSync(`${stem}.args`, 'utf8').trim().replaceAll(dir, '<dir>'), script: readFileSync(`${stem}.script`, 'utf8') };
  });
  return { status: result.status, stderr: result.stderr.toString('latin1'), calls };
}

describe('the firewall loader', () => {
  it('hands nft a script of its own with the export’s elements, checked with nft -c first', () => {
    const result = runLoader(EXPORT);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.calls.map((call) => call.args.replace(/ \S+$/, ' <script>'))).toEqual(['-c -f <script>', '-f <script>']);
    expect(result.calls.map((call) => call.script)).toEqual([EXPORT_LOADED, EXPORT_LOADED]);
    // Not the proxy's file: none of its comments, or anything else it says, reaches nft.
    expect(result.calls[1]!.args).not.toContain('pushback.nft');
  });

  it('loads an export without elements as two empty sets', () => {
    const empty = renderNftables([], { table: 'smtp_pushback', setV4: 'blocked_v4', setV6: 'blocked_v6' }, EXPORT_NOW_MS);
    const result = runLoader(empty);
    expect(result.status).toBe(0);
    expect(result.calls.at(-1)?.script).toBe(loaderScript([], []));
  });

  it('loads nothing when nft -c refuses the script built from the file', () => {
    // Overlapping intervals pass the patterns; nft is the one that knows they conflict.
    const dir = scratch();
    const fakeNft = join(dir, 'nft');
    writeFileSync(fakeNft, `#!/bin/sh\n[ "$1" = "-c" ] && exit 1\ntouch "${dir}/loaded"\n`);
    chmodSync(fakeNft, 0o755);
    writeFileSync(join(dir, 'pushback.nft'), EXPORT);
    const result = run(LOADER, [join(dir, 'pushback.nft')], { NFT: fakeNft });
    expect(result.status).toBe(1);
    expect(existsSync(join(dir, 'loaded'))).toBe(false);
    expect(result.stderr).toMatch(/has elements nft -c refused; nothing loaded/);
  });

  it.each([
    ['flush ruleset', 'flush ruleset\n', 'ruleset'],
    ['an include', 'include "/etc/nftables.conf"\n', 'nftables.conf'],
    ['another table', 'table ip filter {\n}\n', 'filter'],
    ['a rule in our table', 'add rule inet smtp_pushback input accept\n', 'accept'],
    ['the table deleted', 'delete table inet smtp_pushback\n', 'delete'],
    ['the table flushed', 'flush table inet smtp_pushback\n', 'flush table'],
    ['a chain added', 'add chain inet smtp_pushback input\n', 'chain'],
    ['a table added', 'add table inet smtp_pushback\n', 'add table'],
    ['two statements on one line', 'flush set inet smtp_pushback blocked_v4; flush set inet smtp_pushback blocked_v6\n', 'blocked_v6'],
    ['a chain', 'table inet smtp_pushback {\n chain sneak { type filter hook input priority 0; policy accept; }\n}\n', 'sneak'],
    ['a variable', 'define everyone = 0.0.0.0/0\nadd element inet smtp_pushback blocked_v4 { $everyone }\n', 'everyone'],
    ['a comment string', 'add element inet smtp_pushback blocked_v4 { 192.0.2.1 comment "x" }\n', 'comment'],
    ['an IPv6 address in the IPv4 set', 'add element inet smtp_pushback blocked_v4 { 2001:db8::1 }\n', '2001'],
    ['a range', 'add element inet smtp_pushback blocked_v4 { 0.0.0.0-255.255.255.255 }\n', '255'],
    ['an octet above 255', 'add element inet smtp_pushback blocked_v4 { 192.0.2.256 }\n', '256'],
  ])('refuses an export with %s and loads nothing', (_what, content, word) => {
    const result = runLoader(`${EXPORT}${content}`);
    expect(result.status).toBe(1);
    expect(result.calls).toEqual([]);
    expect(result.stderr).toMatch(/outside the sets of table inet smtp_pushback; nothing loaded/);
    // The untrusted words are not repeated in the log.
    expect(result.stderr).not.toContain(word);
  });

  it('loads again when the proxy replaced the file during the load, which systemd would not start it for', () => {
    const dir = scratch();
    const file = join(dir, 'pushback.nft');
    writeFileSync(file, EXPORT);
    const newer = EXPORT.replace('198.51.100.7 timeout 300s', '198.51.100.9 timeout 300s');
    expect(newer).not.toBe(EXPORT);
    writeFileSync(join(dir, 'newer.nft'), newer);
    // The first load sees the proxy's next version renamed into place; every load is recorded.
    const fakeNft = join(dir, 'nft');
    writeFileSync(fakeNft, `#!/bin/sh\n[ "$1" = "-c" ] && exit 0\ncat "$2" >> "${dir}/loaded"\n[ -e "${dir}/newer.nft" ] && mv "${dir}/newer.nft" "${file}"\nexit 0\n`);
    chmodSync(fakeNft, 0o755);
    const result = run(LOADER, [file], { NFT: fakeNft });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const newerLoaded = loaderScript(['192.0.2.0/24 timeout 600s', '198.51.100.9 timeout 300s'], ['2001:db8:7::/48 timeout 600s']);
    expect(readFileSync(join(dir, 'loaded'), 'utf8')).toBe(`${EXPORT_LOADED}${newerLoaded}`);
  });

  it('refuses a symlink, so the proxy cannot make it read another file', () => {
    const result = runLoader((dir) => {
      const real = join(dir, 'real.nft');
      writeFileSync(real, EXPORT);
      symlinkSync(real, join(dir, 'pushback.nft'));
      return join(dir, 'pushback.nft');
    });
    expect(result.status).toBe(1);
    expect(result.calls).toEqual([]);
    expect(result.stderr).toMatch(/not a regular file/);
  });
});

/** Bytes as written: latin1 keeps \xff a single byte 0xff. */
function bytes(text: string): Buffer {
  return Buffer.from(text, 'latin1');
}

const BOM = '\xef\xbb\xbf';
const LOCALES = [['LANG=C.UTF-8', { LANG: 'C.UTF-8' }], ['LC_ALL=C', { LC_ALL: 'C' }]] as const;
/** More elements on one line than the proxy ever writes (500), each legitimate: the line is too long. */
const OVERLONG_LINE = `add element inet smtp_pushback blocked_v4 { ${Array.from({ length: 4000 }, (_, index) => `10.${index >> 8}.${index & 255}.0/24 timeout 600s`).join(', ')} }\n`;

/** Files that must be refused whole: nft is never called. */
const REFUSED: ReadonlyArray<readonly [string, Buffer]> = [
  ['the issue’s comment with \\xff and NUL, then flush ruleset', bytes(`${EXPORT}# \xff\x00\nflush ruleset\n`)],
  ['a NUL alone in a comment', bytes(`${EXPORT}# \x00\n`)],
  ['\\xff alone in a comment', bytes(`${EXPORT}# \xff\n`)],
  ['CRLF line ends', bytes(EXPORT.replaceAll('\n', '\r\n'))],
  ['a CR inside a statement line', bytes(`${EXPORT}flush set inet smtp_pushback blocked_v4\rflush ruleset\n`)],
  ['a CR inside a comment', bytes(`${EXPORT}# harmless\rflush ruleset\n`)],
  ['a VT between two statements', bytes(`${EXPORT}flush set inet smtp_pushback blocked_v4\vflush ruleset\n`)],
  ['a VT inside a comment', bytes(`${EXPORT}# x\vflush ruleset\n`)],
  ['a form feed', bytes(`${EXPORT}\f\n`)],
  ['DEL', bytes(`${EXPORT}# \x7f\n`)],
  ['a backslash continuing an element line', bytes(`${EXPORT}add element inet smtp_pushback blocked_v4 { 192.0.2.9, \\\n0.0.0.0/0 }\n`)],
  ['a backslash at the end of a statement', bytes(`${EXPORT}flush set inet smtp_pushback blocked_v4 \\\nflush ruleset\n`)],
  ['an include', bytes(`${EXPORT}include "/etc/nftables.conf"\n`)],
  ['another table', bytes(`${EXPORT}table ip filter {\n\tchain input { type filter hook input priority 0; policy drop; }\n}\n`)],
  ['elements for a set of another table', bytes(`${EXPORT}add element ip filter blocked_v4 { 192.0.2.9 }\n`)],
  ['flush ruleset after a statement, on its line', bytes(`${EXPORT}flush set inet smtp_pushback blocked_v4 # x\nflush ruleset\n`)],
  ['a UTF-8 BOM', bytes(`${BOM}${EXPORT}`)],
  ['a UTF-8 BOM in a comment', bytes(`${EXPORT}# ${BOM}\n`)],
  ['U+202E in a comment, as UTF-8', Buffer.from(`${EXPORT}# \u202e\n`, 'utf8')],
  ['an overlong line of legitimate elements', bytes(`${EXPORT}${OVERLONG_LINE}`)],
  ['an overlong comment', bytes(`${EXPORT}# ${'a'.repeat(70_000)}\nflush ruleset\n`)],
];

/** Files whose hostile text sits in comments: loaded, but what nft gets is the loader's script of the export alone. */
const COMMENTED: ReadonlyArray<readonly [string, string]> = [
  ['flush ruleset', '# flush ruleset\n'],
  ['an include', '# include "/etc/nftables.conf"\n'],
  ['another table', '# table ip filter { chain input { type filter hook input priority 0; policy drop; } }\n'],
  ['a backslash before a statement', '# \\\n'],
  ['a statement after a semicolon', '#; flush ruleset\n'],
];

describe.each(LOCALES)('the firewall loader on hostile files, %s', (_locale, locale) => {
  const env = withLocale(locale);

  it.each(REFUSED)('refuses %s, and nft is never called', (_what, content) => {
    const result = runLoader(content, env);
    expect(result.status).toBe(1);
    expect(result.calls).toEqual([]);
    expect(result.stderr).toMatch(/; nothing loaded\n$/);
    expect(result.stderr).not.toMatch(/[^\t\n\x20-\x7e]|ruleset/);
  });

  it.each(COMMENTED)('loads the elements of an export with %s in a comment, and only them', (_what, comment) => {
    const result = runLoader(`${EXPORT}${comment}`, env);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.calls.map((call) => call.script)).toEqual([EXPORT_LOADED, EXPORT_LOADED]);
  });
});

const nft = toolOrSkip('nft', 'nftables');

describe.skipIf(!nft)('nftables example', () => {
  let withoutPrivilege: string | undefined;

  beforeAll(() => {
    const probe = run(nft!, ['-c', '-f', NFT_EXAMPLE]);
    if (probe.status !== 0 && /Operation not permitted|Permission denied/i.test(probe.stderr)) {
      withoutPrivilege = `nft -c needs CAP_NET_ADMIN: ${probe.stderr.trim()}`;
      console.warn(`skipping the nft checks: ${withoutPrivilege}`);
    }
  });

  it('passes nft -c', (context) => {
    if (withoutPrivilege) return context.skip(withoutPrivilege);
    const result = run(nft!, ['-c', '-f', NFT_EXAMPLE]);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
  });

  it.for([
    ['the example first', ['example', 'export', 'example']],
    ['the export first', ['export', 'example', 'export']],
  ] as const)('loads with the export in either order, %s, in a private network namespace', ([, steps], context) => {
    if (withoutPrivilege) return context.skip(withoutPrivilege);
    const unshare = findTool('unshare');
    if (!unshare) return context.skip('unshare (util-linux) is missing');
    const exportFile = join(scratch(), 'pushback.nft');
    writeFileSync(exportFile, EXPORT);
    const commands = steps.map((step) => (step === 'example' ? `"$NFT" -f "${NFT_EXAMPLE}"` : `"${LOADER}" "${exportFile}"`));
    const script = `set -e\n${commands.join('\n')}\n"$NFT" list table inet smtp_pushback\n`;
    const result = run(unshare, ['--net', 'sh', '-c', script], { NFT: nft! });
    if (result.status !== 0 && /unshare failed: Operation not permitted/.test(result.stderr)) {
      return context.skip(`a network namespace needs CAP_SYS_ADMIN: ${result.stderr.trim()}`);
    }
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const listing = result.stdout;
    expect(listing).toMatch(/set blocked_v4 \{\s*type ipv4_addr\s*flags interval,timeout\s*elements = \{ 192\.0\.2\.0\/24 timeout 10m expires \S+, 198\.51\.100\.7 timeout 5m expires \S+ \}/);
    expect(listing).toMatch(/set blocked_v6 \{\s*type ipv6_addr\s*flags interval,timeout\s*elements = \{ 2001:db8:7::\/48 timeout 10m expires \S+ \}/);
    // Loaded twice, the example still has its two rules once each.
    expect(listing.match(/saddr @blocked_v4 tcp dport 25 /g)).toHaveLength(1);
    expect(listing.match(/saddr @blocked_v6 tcp dport 25 /g)).toHaveLength(1);
  });

  it.for(LOCALES)('leaves the ruleset as it was when the file hides flush ruleset behind \\xff and NUL, %s', ([, locale], context) => {
    if (withoutPrivilege) return context.skip(withoutPrivilege);
    const unshare = findTool('unshare');
    if (!unshare) return context.skip('unshare (util-linux) is missing');
    const dir = scratch();
    writeFileSync(join(dir, 'pushback.nft'), EXPORT);
    writeFileSync(join(dir, 'hostile.nft'), bytes(`${EXPORT}# \xff\x00\nflush ruleset\n`));
    // The host's ruleset stands in as the example and a table of its own; the loader then meets the
    // proxy's export and the hostile file, in the locale under test.
    const script = [
      `"$NFT" -f "${NFT_EXAMPLE}"`,
      '"$NFT" add table ip host_filter',
      `"${LOADER}" "${dir}/pushback.nft"`,
      `if "${LOADER}" "${dir}/hostile.nft"; then echo accepted; exit 1; fi`,
      '"$NFT" list ruleset',
    ].join('\n');
    const result = spawnSync(unshare, ['--net', 'sh', '-c', `set -e\n${script}\n`], { encoding: 'utf8', timeout: 30_000, env: { ...withLocale(locale), NFT: nft! } });
    if (result.status !== 0 && /unshare failed: Operation not permitted/.test(result.stderr)) {
      return context.skip(`a network namespace needs CAP_SYS_ADMIN: ${result.stderr.trim()}`);
    }
    expect(result.status, result.stdout + result.stderr).toBe(0);
    expect(result.stderr).toMatch(/hostile\.nft has 2 byte\(s\) other than tab, newline and printable ASCII; nothing loaded/);
    expect(result.stdout).toMatch(/^table ip host_filter \{/m);
    expect(result.stdout.match(/saddr @blocked_v4 tcp dport 25 /g)).toHaveLength(1);
    expect(result.stdout).toMatch(/elements = \{ 192\.0\.2\.0\/24 timeout 10m expires \S+, 198\.51\.100\.7 timeout 5m expires \S+ \}/);
  });
});

const postconf = toolOrSkip('postconf', 'postfix');

describe.skipIf(!postconf)('Postfix configuration', () => {
  const masterDist = '/usr/share/postfix/master.cf.dist';

  function postconfOf(dir: string, ...flags: string[]): { stdout: string; stderr: string } {
    const result = run(postconf!, ['-c', dir, ...flags]);
    expect(result.status, result.stderr).toBe(0);
    return { stdout: result.stdout, stderr: result.stderr };
  }

  it('reads the snippets, as a host install applies them, without an unknown parameter', () => {
    const dir = scratch();
    writeFileSync(join(dir, 'main.cf'), readRepoFile('deploy/postfix/main.cf.snippet'));
    // As the snippet says: the public smtpd line of port 25 replaced by the proxy's service.
    const stock = readFileSync(masterDist, 'utf8').split('\n').filter((line) => !/^smtp\s+inet\s/.test(line)).join('\n');
    writeFileSync(join(dir, 'master.cf'), `${stock}\n${readRepoFile('deploy/postfix/master.cf.snippet')}`);
    const main = postconfOf(dir, '-n');
    expect(main.stderr).toBe('');
    expect(main.stdout).toMatch(/^mynetworks =$/m);
    const services = postconfOf(dir, '-M').stdout;
    expect(services).toMatch(/^127\.0\.0\.1:10025\s+inet\s+n\s+-\s+y\s+-\s+-\s+smtpd /m);
    expect(services).not.toMatch(/^smtp\s+inet\s/m);
    const overrides = postconfOf(dir, '-P');
    expect(overrides.stderr).toBe('');
    expect(overrides.stdout).toMatch(/^127\.0\.0\.1:10025\/inet\/smtpd_authorized_xclient_hosts = 127\.0\.0\.1$/m);
  });

  it('the container’s entrypoint builds a configuration with the proxy’s service alone on 10025', () => {
    const dir = scratch();
    copyFileSync(masterDist, join(dir, 'master.cf'));
    const result = run(repoPath('deploy/postfix/docker-entrypoint.sh'), ['--configure-only'], {
      POSTFIX_PROXY_ADDRESS: '172.30.25.10',
      POSTFIX_DOMAIN: 'example.org',
      POSTFIX_MAILBOXES: 'postmaster,alice',
      POSTFIX_CONFIG_DIRECTORY: dir,
      POSTFIX_PUSHBACK_SNIPPETS: repoPath('deploy/postfix'),
    });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(postconfOf(dir, '-n').stderr).toBe('');
    const services = postconfOf(dir, '-M').stdout;
    expect(services).toMatch(/^10025\s+inet\s+n\s+-\s+n\s+-\s+-\s+smtpd /m);
    expect(services).not.toMatch(/^smtp\s+inet\s/m);
    expect(services).not.toMatch(/^\S+\s+\S+\s+\S+\s+\S+\s+y\s/m);
    expect(postconfOf(dir, '-P').stdout).toMatch(/^10025\/inet\/smtpd_authorized_xclient_hosts = 172\.30\.25\.10$/m);
    expect(postconfOf(dir, '-h', 'mynetworks').stdout.trim()).toBe('');
    expect(readFileSync(join(dir, 'vmailbox'), 'utf8')).toBe('postmaster@example.org example.org/postmaster/\nalice@example.org example.org/alice/\n');
  });
});

describe('the image’s health check', () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    proxy = await startTestProxy(upstream.address);
  });

  afterAll(async () => {
    await proxy?.stop();
    await upstream?.close();
  });

  async function healthcheck(admin: string, path: string): Promise<number> {
    try {
      await runAsync(process.execPath, [repoPath('deploy/docker/healthcheck.mjs'), path], { env: { ...process.env, PUSHBACK_ADMIN: admin }, timeout: 10_000 });
      return 0;
    } catch (error) {
      return (error as { code?: number }).code ?? -1;
    }
  }

  it('passes while the proxy answers, reads readiness, and fails where nothing listens', async () => {
    const port = proxy.proxy.adminAddress.port;
    // As in the compose file: the admin listener on 0.0.0.0, asked on this host.
    expect(await healthcheck(`0.0.0.0:${port}`, '/healthz')).toBe(0);
    expect(await healthcheck(`127.0.0.1:${port}`, '/readyz')).toBe(0);
    void proxy.proxy.listener.drain();
    expect(await healthcheck(`127.0.0.1:${port}`, '/readyz')).toBe(1);
    expect(await healthcheck(`127.0.0.1:${port}`, '/healthz')).toBe(0);
    expect(await healthcheck(`127.0.0.1:${await freePort()}`, '/healthz')).toBe(1);
  });
});
