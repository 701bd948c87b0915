// Policy reload: SIGHUP and file changes bring a valid policy into force; a broken one is refused
// with file:line:reason, the old policy stays, and /status shows the refusal.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadPolicyFile } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { startProxy, type RunningProxy } from '../../src/main.js';
import { FakeUpstream } from '../support/fake-upstream.js';
import { waitForAsync } from '../support/redis-server.js';

let proxy: RunningProxy | undefined;
let upstream: FakeUpstream | undefined;

afterEach(async () => {
  await proxy?.stop();
  await upstream?.close();
});

async function statusJson(): Promise<{ mode: string; policy: { reloads: number; lastError?: string[] } }> {
  return (await (await fetch(`http://127.0.0.1:${proxy!.adminAddress.port}/status`)).json()) as never;
}

describe('policy reload', () => {
  it('applies a valid change on SIGHUP and on file change, and keeps the old policy when the file is broken', async () => {
    upstream = await FakeUpstream.start();
    const file = join(mkdtempSync(join(tmpdir(), 'pushback-reload-')), 'policy.yaml');
    const env = { PUSHBACK_LISTEN: '127.0.0.1:0', PUSHBACK_ADMIN: '127.0.0.1:0', PUSHBACK_UPSTREAM: upstream.address };
    writeFileSync(file, 'mode: enforce\n');
    const loaded = await loadPolicyFile(file, env);
    if (!loaded.ok) throw new Error('sample policy refused');
    proxy = await startProxy(loaded.policy, createLogger('silent'), { policySource: file });
    const holder = proxy.policy;
    // The holder reads the environment of the process; the overrides above matter only at start.

    writeFileSync(file, 'mode: observe\n');
    process.emit('SIGHUP');
    await waitForAsync(async () => holder.current().mode === 'observe', 5_000, 'SIGHUP reload');
    expect((await statusJson()).mode).toBe('observe');

    writeFileSync(file, 'mode: observe\npushback:\n  verdictTtlSeconds: -1\n  colour: blue\n');
    const reloadsBefore = holder.state.reloads;
    await waitForAsync(async () => holder.state.lastError !== undefined, 5_000, 'the refusal of the broken file');
    expect(holder.state.reloads).toBe(reloadsBefore);
    expect(holder.current().mode).toBe('observe');
    expect(holder.current().pushback.verdictTtlSeconds).toBe(600);
    const refused = (await statusJson()).policy.lastError ?? [];
    expect(refused).toEqual(expect.arrayContaining([
      expect.stringMatching(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:3:\\d+: pushback\\.verdictTtlSeconds: `)),
      expect.stringMatching(/:4:\d+: pushback: unknown key "colour"/),
    ]));

    writeFileSync(file, 'mode: enforce\npushback:\n  verdictTtlSeconds: 120\n');
    await waitForAsync(async () => holder.current().pushback.verdictTtlSeconds === 120, 5_000, 'the file-change reload');
    expect(holder.state.lastError).toBeUndefined();
    expect(holder.current().mode).toBe('enforce');
  });
});
