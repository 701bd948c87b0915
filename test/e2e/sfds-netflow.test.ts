// The real pipeline of the SFDS paper's input: SMTP sessions on loopback, softflowd exporting NetFlow v9 of them to
// nfcapd, and `smtp-pushback sfds` reading the file nfcapd wrote (through nfdump). Each session from our
// bound client address must come out as exactly one flow, carrying at least the bytes the client sent.
// In CI softflowd and nfdump are installed by .ci/install-deps.sh and the suite runs as root, so a missing
// tool there is a failure, not a skip.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { netflowPipelineUnavailableReason, startNetflowPipeline, type NetflowPipeline } from '../support/netflow-pipeline.js';
import { completeSession } from '../support/sessions.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '../../src/cli/main.ts');
const unavailable = netflowPipelineUnavailableReason();
const runE2e = unavailable === undefined || process.env.CI === 'true';
if (!runE2e) console.warn(`skipping NetFlow e2e: ${unavailable}`);

const CLIENT = '127.31.7.9';
const SESSIONS = 12;
const BODY_BYTES = 3_000;

interface Row {
  source: string;
  flows: number;
  packets: number;
  bytes: number;
  virtualFlows: number;
}

describe.skipIf(!runE2e)('softflowd -> nfcapd -> smtp-pushback sfds', { timeout: 90_000 }, () => {
  let upstream: FakeUpstream;
  let pipeline: NetflowPipeline | undefined;

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    pipeline = await startNetflowPipeline(`tcp port ${upstream.port}`);
  });

  afterAll(async () => {
    await pipeline?.cleanup();
    await upstream?.close();
  });

  it('reads what nfcapd wrote: one flow per SMTP session from the client, none for the server\'s answers', async () => {
    for (let session = 0; session < SESSIONS; session += 1) {
      expect(await completeSession(upstream.port, CLIENT, 'b@example.test', BODY_BYTES)).toBe(250);
    }
    await pipeline!.flush();
    const files = await pipeline!.stop();
    expect(files.length, pipeline!.log()).toBeGreaterThan(0);

    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', CLI, 'sfds', ...files, '--port', String(upstream.port), '--json'], {
      timeout: 60_000,
      env: { ...process.env, PUSHBACK_POLICY: '' },
    });
    expect(stderr).toBe('');
    const report = JSON.parse(stdout) as { inputs: Array<{ kind: string; malformedLines: number }>; flows: number; top: { sources: Row[] }; flooding: unknown[] };
    expect(report.inputs.every((input) => input.kind === 'nfcapd' && input.malformedLines === 0)).toBe(true);
    // Only sessions to the SMTP port are in the file's SMTP flows: ours, from one address to one listener.
    expect(report.flows).toBe(SESSIONS);
    expect(report.top.sources).toHaveLength(1);
    const [row] = report.top.sources;
    expect(row).toMatchObject({ source: CLIENT, flows: SESSIONS, virtualFlows: 1 });
    // IP bytes from client to server include every message body it sent, with headers on top.
    expect(row!.bytes).toBeGreaterThan(SESSIONS * BODY_BYTES);
    expect(row!.packets).toBeGreaterThanOrEqual(SESSIONS * 7); // SYN, EHLO, MAIL, RCPT, DATA, body, QUIT at least
    expect(report.flooding).toEqual([]);
  });
});
