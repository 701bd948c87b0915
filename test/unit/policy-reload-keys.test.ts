// What a reload applies, per key: the keys read only at start are named in the reload's warning, and
// no key that is read where it is used (admin.allowedHosts at each request, mode, pushback …) is.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { loadPolicyFile } from '../../src/config/load.js';
import { PolicyHolder } from '../../src/config/reload.js';
import { createLogger } from '../../src/log.js';

const RESTART_WARNING = 'these policy keys changed but take effect only at the next start';

async function reloadFrom(before: string, after: string): Promise<{ holder: PolicyHolder; log: Array<Record<string, unknown>> }> {
  const file = join(mkdtempSync(join(tmpdir(), 'pushback-reload-keys-')), 'policy.yaml');
  writeFileSync(file, before);
  const loaded = await loadPolicyFile(file, {});
  if (!loaded.ok) throw new Error('the first policy was refused');
  const log: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) log.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const holder = new PolicyHolder(loaded.policy, file, createLogger('info', sink), {});
  writeFileSync(file, after);
  expect(await holder.reload('test')).toBe(true);
  return { holder, log };
}

describe('policy reload, per key', () => {
  it('applies admin.allowedHosts (read at each request) without claiming it needs a restart', async () => {
    const { holder, log } = await reloadFrom('admin:\n  allowedHosts: [old.example]\n', 'admin:\n  allowedHosts: [new.example]\n');
    expect(holder.current().admin.allowedHosts).toEqual(['new.example']);
    expect(log.filter((record) => /next start/.test(String(record.msg)))).toEqual([]);
  });

  it('names each restart-only key that changed, and only those', async () => {
    const { log } = await reloadFrom(
      'mode: enforce\nadmin:\n  maxConnections: 32\n',
      'mode: observe\nadmin:\n  maxConnections: 16\n  allowedHosts: [a.example]\ndns:\n  timeoutMs: 2000\nquarantine:\n  maxMessages: 5\n  adminToken: 0123456789abcdef\n',
    );
    expect(log.find((record) => record.msg === RESTART_WARNING)?.keys).toEqual(['dns', 'admin.maxConnections', 'quarantine.maxMessages']);
  });
});
