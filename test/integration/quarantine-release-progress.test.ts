// `smtp-pushback quarantine release --all` shows its progress on a terminal (a fake TTY stream here): the
// held count of a fake admin listener falls while the release call is running, and the line counts what
// left it, with its rate, redrawn with \r and erased at the end. Piped, stderr gets nothing extra.
import http from 'node:http';
import { once } from 'node:events';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerQuarantineCommands } from '../../src/cli/quarantine-command.js';
import type { ProgressStream } from '../../src/cli/progress.js';

const SELECTED = 40;
const RELEASE_MS = 1_600;

let server: http.Server;
let admin = '';
let releaseStartedMs: number | undefined;

/** Held entries: all 40 until the release starts, then fewer as its time passes, none when it answers. */
function heldNow(): number {
  if (releaseStartedMs === undefined) return SELECTED;
  return Math.max(0, Math.round(SELECTED * (1 - (Date.now() - releaseStartedMs) / RELEASE_MS)));
}

beforeAll(async () => {
  server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://admin.invalid');
    const answer = (body: unknown): void => void response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (request.method === 'GET' && url.pathname === '/quarantine' && url.searchParams.get('state') === 'held') return answer({ total: heldNow(), entries: [] });
    if (request.method === 'POST' && url.pathname === '/quarantine/release') {
      request.resume();
      releaseStartedMs = Date.now();
      const results = Array.from({ length: SELECTED }, (_, index) => ({ id: `entry-${index}`, outcome: 'released' }));
      setTimeout(() => answer({ results }), RELEASE_MS);
      return undefined;
    }
    response.writeHead(404).end();
    return undefined;
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  admin = `127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

async function release(progress: ProgressStream): Promise<{ out: string; err: string; exitCode: number }> {
  releaseStartedMs = undefined;
  let out = '';
  let err = '';
  let exitCode = 0;
  const program = new Command().exitOverride();
  registerQuarantineCommands(program, async (options) => options.admin, {
    out: (text) => void (out += text), err: (text) => void (err += text), fail: (code) => void (exitCode = code), env: { PUSHBACK_ADMIN_TOKEN: 'x'.repeat(16) }, progress,
  });
  await program.parseAsync(['node', 'smtp-pushback', 'quarantine', 'release', '--all', '--now', '--admin', admin]);
  return { out, err, exitCode };
}

describe('quarantine release --all progress', () => {
  it('on a terminal: one line redrawn with the count done and the rate, erased before the result', async () => {
    const written: string[] = [];
    const result = await release({ isTTY: true, columns: 120, write: (text: string) => written.push(text) });
    expect(result).toMatchObject({ exitCode: 0, err: '' });
    expect(result.out).toContain(`${SELECTED} released`);
    const drawn = written.filter((text) => text.includes('quarantine release:'));
    expect(drawn.length).toBeGreaterThanOrEqual(1);
    for (const text of drawn) expect(text).toMatch(new RegExp(`^\\rquarantine release: \\d+/${SELECTED} entries done, [\\d.,]+/s\\x1b\\[K$`));
    const counts = drawn.map((text) => Number(/: (\d+)\//.exec(text)?.[1]));
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(Math.max(...counts)).toBeGreaterThan(0);
    expect(written.at(-1)).toBe('\r\x1b[K');
  });

  it('piped: nothing on the progress stream', async () => {
    const written: string[] = [];
    const result = await release({ write: (text: string) => written.push(text) });
    expect(result.exitCode).toBe(0);
    expect(written).toEqual([]);
  });
});
