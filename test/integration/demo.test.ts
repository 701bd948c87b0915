// `npm run demo` as a newcomer's script or CI would run it (not a terminal): a short run through the
// real proxy, the flood benchmark's senders and the counting sink must exit 0 after its table, with at
// least 99 % of the legitimate mail delivered and the dashboard's URL printed.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '../..');
const DEMO_SECONDS = 20;
const RUN_TIMEOUT_MS = 75_000;

describe('npm run demo', () => {
  it(`runs ${DEMO_SECONDS} s non-interactively, prints its table and exits 0 with legit mail delivered`, async () => {
    const child = spawn(process.execPath, [join(ROOT, 'node_modules/tsx/dist/cli.mjs'), join(ROOT, 'demo/demo.ts')], {
      cwd: ROOT,
      env: { ...process.env, DEMO_SECONDS: String(DEMO_SECONDS) },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    // The demo's own process group: a hung run leaves no proxy or load process behind.
    const timer = setTimeout(() => { if (child.pid) process.kill(-child.pid, 'SIGKILL'); }, RUN_TIMEOUT_MS);
    const [code] = (await once(child, 'close')) as [number | null];
    clearTimeout(timer);

    expect(code, `stderr:\n${stderr}\nstdout:\n${stdout}`).toBe(0);
    expect(stdout).toContain(`smtp-pushback demo, ${DEMO_SECONDS} s at the shipped policy:`);
    const legit = /legit mail delivered\s+([\d,]+) of ([\d,]+)/.exec(stdout);
    expect(legit, stdout).not.toBeNull();
    const [delivered, sent] = [legit?.[1], legit?.[2]].map((text) => Number((text ?? '').replace(/,/g, ''))) as [number, number];
    expect(sent).toBeGreaterThanOrEqual(DEMO_SECONDS * 10 * 0.95);
    expect(delivered / sent).toBeGreaterThanOrEqual(0.99);
    for (const row of ['flood connections', 'flood sessions refused or evicted', 'flood sessions closed idle', 'time to status -1']) expect(stdout).toContain(row);
    expect(stdout).toMatch(/dashboard\s+http:\/\/127\.0\.0\.1:\d+\//);
    // Piped: plain progress lines, never a carriage return or an escape sequence.
    expect(stderr).toContain('legit');
    expect(stderr).not.toMatch(/[\r\x1b]/);
  }, RUN_TIMEOUT_MS + 5_000);
});
