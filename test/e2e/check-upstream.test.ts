// `smtp-pushback check-upstream` as a process (the real CLI through tsx) against throwaway Postfixes: one set up
// as the proxy needs (XCLIENT from loopback, mynetworks empty) passes; one that leaves this host out of
// smtpd_authorized_xclient_hosts fails with Postfix's own reason; one with the proxy's address in mynetworks
// fails the open-relay check without XCLIENT; and a --rcpt in a domain Postfix refuses fails with its 554.
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type PostfixInstance } from '../support/postfix.js';

// In CI Postfix is installed by .ci/install-deps.sh, so a missing Postfix there is a failure, not a skip.
const runE2e = postfixAvailable() || process.env.CI === 'true';
if (!runE2e) console.warn(`skipping check-upstream e2e: ${postfixUnavailableReason()}`);

const CLI = join(import.meta.dirname, '../../src/cli/main.ts');

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function checkUpstream(upstream: { host: string; port: number }, args: readonly string[] = []): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, PUSHBACK_POLICY: '', PUSHBACK_UPSTREAM: `${upstream.host}:${upstream.port}` };
    execFile(process.execPath, ['--import', 'tsx', CLI, 'check-upstream', '--timeout', '10', ...args], { env, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') return reject(error);
      resolve({ code: typeof error?.code === 'number' ? error.code : 0, stdout, stderr });
    });
  });
}

/** The report's line that starts with `level` and holds every fragment, or a failure that shows the report. */
function findingLine(result: CliResult, level: string, ...fragments: (string | RegExp)[]): string {
  const lines = result.stdout.split('\n').filter((text) => text.startsWith(level.padEnd(4)));
  const found = lines.find((text) => fragments.every((fragment) => (typeof fragment === 'string' ? text.includes(fragment) : fragment.test(text))));
  expect(found, `no "${level}" line with ${fragments.join(', ')} in:\n${result.stdout}${result.stderr}`).toBeDefined();
  return found as string;
}

describe.skipIf(!runE2e)('check-upstream against a real Postfix', () => {
  let ready: PostfixInstance;
  let noXclient: PostfixInstance;
  let openRelay: PostfixInstance;
  const dir = mkdtempSync(join(tmpdir(), 'pushback-check-upstream-'));

  beforeAll(async () => {
    [ready, noXclient, openRelay] = await Promise.all([
      // What the README's walkthrough and deploy/postfix set: XCLIENT from the proxy, nothing in mynetworks.
      startPostfix({ users: ['alice'], mynetworks: [] }),
      startPostfix({ users: ['alice'], mynetworks: [], xclientHosts: ['192.0.2.99'] }),
      // Debian's stock mynetworks holds the proxy's loopback address. Mail for elsewhere is discarded rather
      // than refused at RCPT by the harness's error transport, as a real Postfix would take it to send on.
      startPostfix({
        users: ['alice'],
        mynetworks: ['127.0.0.0/8'],
        mainCf: { default_transport: 'discard:test instance', relay_transport: 'discard:test instance' },
      }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([ready?.stop(), noXclient?.stop(), openRelay?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('passes when Postfix offers and accepts XCLIENT and relays for nobody, with one line a finding', async () => {
    const result = await checkUpstream(ready, ['--rcpt', `alice@${ready.domain}`]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    findingLine(result, 'ok', 'reachable:', `${ready.host}:${ready.port}`, '220 postfix.test ESMTP');
    findingLine(result, 'ok', 'PIPELINING: offered');
    findingLine(result, 'ok', /SIZE \d+: offered/);
    findingLine(result, 'ok', '8BITMIME: offered');
    findingLine(result, 'ok', 'XCLIENT: offered with', 'ADDR', 'NAME');
    findingLine(result, 'ok', 'XCLIENT accepted from 127.0.0.1', 'ADDR=192.0.2.1', ': 220 ');
    findingLine(result, 'ok', `RCPT alice@${ready.domain} for an outside client (192.0.2.1`, ': 250 2.1.5 Ok');
    findingLine(result, 'ok', 'open relay: RCPT relay-test@example.net for an outside client', 'refused: 554 5.7.1', 'Relay access denied');
    findingLine(result, 'ok', 'open relay: RCPT relay-test@example.net for this host (127.0.0.1, without XCLIENT) refused: 554 5.7.1');
    expect(result.stdout).not.toMatch(/^FAIL/m);
    expect(result.stdout.trimEnd().split('\n').at(-1)).toBe('result: OK, Postfix is ready for the proxy');
  });

  it('reads upstream.address from --policy', async () => {
    const policyFile = join(dir, 'policy.yaml');
    writeFileSync(policyFile, `upstream:\n  address: ${ready.host}:${ready.port}\n  xclient: required\n`);
    const result = await checkUpstream(ready, ['--policy', policyFile]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    findingLine(result, 'ok', 'reachable:', `${ready.host}:${ready.port}`);
  });

  it('fails a --rcpt in a domain Postfix refuses, with the 554 Postfix gave', async () => {
    const result = await checkUpstream(ready, ['--rcpt', `alice@${ready.domain}`, '--rcpt', 'postmaster@elsewhere.example.org']);
    expect(result.code, result.stdout).toBe(1);
    findingLine(result, 'ok', `RCPT alice@${ready.domain}`, '250 2.1.5 Ok');
    findingLine(result, 'FAIL', 'RCPT postmaster@elsewhere.example.org for an outside client (192.0.2.1', ': 554 5.7.1 <postmaster@elsewhere.example.org>: Relay access denied');
    expect(result.stdout.trimEnd().split('\n').at(-1)).toBe('result: 1 check failed');
  });

  it('fails with Postfix\'s reason when smtpd_authorized_xclient_hosts leaves this host out', async () => {
    const result = await checkUpstream(noXclient, ['--rcpt', `alice@${noXclient.domain}`]);
    expect(result.code, result.stdout).toBe(1);
    findingLine(result, 'FAIL', 'XCLIENT: not offered to this host', 'policy upstream.xclient is required');
    findingLine(result, 'FAIL', 'XCLIENT refused from 127.0.0.1', '550 5.7.0 Error: insufficient authorization', 'smtpd_authorized_xclient_hosts');
    findingLine(result, 'FAIL', `RCPT alice@${noXclient.domain}: not checked`);
    // The open relay check without XCLIENT still runs, and passes: this host is not in mynetworks.
    findingLine(result, 'ok', 'open relay: RCPT relay-test@example.net for this host (127.0.0.1, without XCLIENT) refused');
  });

  it('fails the open-relay check when the proxy\'s address is in mynetworks', async () => {
    const result = await checkUpstream(openRelay);
    expect(result.code, result.stdout).toBe(1);
    // Under XCLIENT Postfix judges the outside client, and refuses it...
    findingLine(result, 'ok', 'open relay: RCPT relay-test@example.net for an outside client', 'refused: 554 5.7.1');
    // ...but as itself the proxy may relay anywhere.
    findingLine(result, 'FAIL', 'open relay: RCPT relay-test@example.net for this host (127.0.0.1, without XCLIENT) accepted: 250 2.1.5 Ok', 'out of mynetworks');
  });

  it('fails, with the reason, when nothing listens at upstream.address', async () => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const closed = { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
    server.close();
    await once(server, 'close');
    const result = await checkUpstream(closed);
    expect(result.code, result.stdout).toBe(1);
    findingLine(result, 'FAIL', 'reachable:', `${closed.host}:${closed.port}`, 'ECONNREFUSED');
  });
});
