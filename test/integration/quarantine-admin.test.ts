// The quarantine's operator API on a real admin listener over a real spool, and the `quarantine` commands
// against it: reads without a token, every change refused (and nothing changed) without the right token,
// release asked of the scheduler with the right force, deletes by id and by age.
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AdminServer } from '../../src/admin/http-server.js';
import { quarantineRoutes, type QuarantineControl } from '../../src/admin/quarantine-routes.js';
import { registerQuarantineCommands } from '../../src/cli/quarantine-command.js';
import { QuarantineSpool } from '../../src/quarantine/spool.js';
import type { EntryMeta } from '../../src/quarantine/spool-entry.js';
import { newEntry } from '../support/spool-content.js';

const TOKEN = 'test-token-0123456789abcdef';
const HOUR_MS = 3_600_000;
const UNKNOWN_ID = '20200101T000000000Z-0000000000';

let dir: string;
let spool: QuarantineSpool;
let server: AdminServer;
let admin: string;
let configuredToken: string | null;
let releaseCalls: Array<{ ids: string[]; force: boolean }>;
/** Oldest first: 10 days old from 192.0.2.1, 1 hour old from 192.0.2.2, 1 minute old from 198.51.100.7. */
let ids: [string, string, string];

async function store(address: string, ageMs: number): Promise<EntryMeta> {
  const entry = newEntry(0, { receivedAtMs: Date.now() - ageMs });
  entry.client = { ...entry.client, address };
  return spool.write(entry, Readable.from([Buffer.from('Subject: x\r\n\r\nbody\r\n')]));
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pushback-qadmin-'));
  spool = await QuarantineSpool.open(dir, { maxBytes: 10_000_000, maxMessages: 100 }, { hostname: 'proxy.test' });
  ids = [(await store('192.0.2.1', 240 * HOUR_MS)).id, (await store('192.0.2.2', HOUR_MS)).id, (await store('198.51.100.7', 60_000)).id];
  configuredToken = TOKEN;
  releaseCalls = [];
  const control: QuarantineControl = {
    spool,
    async release(requested, options) {
      releaseCalls.push({ ids: [...requested], force: options.force });
      return requested.map((id) => ({ id, outcome: options.force ? 'released' : 'scheduled' }));
    },
  };
  server = new AdminServer({
    status: () => ({}),
    metrics: async () => ({ contentType: 'text/plain', body: '' }),
    ready: () => true,
    maxConnections: 32,
    routes: quarantineRoutes(control, () => configuredToken, { bodyTimeoutMs: 500 }),
  });
  const address = await server.listen({ host: '127.0.0.1', port: 0 });
  admin = `127.0.0.1:${address.port}`;
});

afterEach(async () => {
  await server.close();
  await spool.close();
  await rm(dir, { recursive: true, force: true });
});

async function call(method: string, path: string, options: { token?: string; body?: string } = {}): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = options.token === undefined ? {} : { authorization: `Bearer ${options.token}` };
  const response = await fetch(`http://${admin}${path}`, { method, headers, ...(options.body === undefined ? {} : { body: options.body }) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : undefined };
}

/** A loopback port that was free a moment ago and has no listener now. */
async function closedPort(): Promise<number> {
  const probe = createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

const listed = async (query = ''): Promise<string[]> => ((await call('GET', `/quarantine${query}`, { token: TOKEN })).body.entries as EntryMeta[]).map((entry) => entry.id);

describe('quarantine admin API: reads', () => {
  it('lists entries oldest first, filtered by source, since and state, bounded by limit', async () => {
    expect(await listed()).toEqual(ids);
    expect(await listed('?source=192.0.2.0/24')).toEqual([ids[0], ids[1]]);
    expect(await listed('?source=198.51.100.7')).toEqual([ids[2]]);
    expect(await listed('?since=2h')).toEqual([ids[1], ids[2]]);
    expect(await listed(`?since=${new Date(Date.now() - 10 * 60_000).toISOString()}`)).toEqual([ids[2]]);
    expect(await listed(`?since=${Date.now() - 10 * 60_000}`)).toEqual([ids[2]]);
    expect(await listed('?state=held')).toEqual(ids);
    expect(await listed('?state=released')).toEqual([]);
    expect((await call('GET', '/quarantine?limit=1', { token: TOKEN })).body).toMatchObject({ total: 3, entries: [{ id: ids[0] }] });
    expect((await call('GET', '/quarantine?source=192.0.2.300/24', { token: TOKEN })).status).toBe(400);
    expect((await call('GET', '/quarantine?since=yesterday-ish', { token: TOKEN })).status).toBe(400);
    expect((await call('GET', '/quarantine?state=lost', { token: TOKEN })).status).toBe(400);
  });

  it('gives stats, and one entry with its headers only', async () => {
    const stats = await call('GET', '/quarantine/stats');
    expect(stats.body).toMatchObject({ entries: 3, byState: { held: 3, releasing: 0, released: 0, rejected: 0 } });
    const shown = await call('GET', `/quarantine/${ids[1]}`, { token: TOKEN });
    expect(shown.status).toBe(200);
    expect(shown.body.entry).toMatchObject({ id: ids[1], client: { address: '192.0.2.2' }, state: 'held' });
    expect(shown.body.headers).toMatch(/^Received: from sender\.test/);
    expect(shown.body.headers).toMatch(/Subject: x\r\n$/);
    expect(shown.body.headers).not.toContain('body');
    expect(shown.body.headersTruncated).toBe(false);
    const long = await spool.write(newEntry(1), Readable.from([Buffer.from(`X-Long: ${'a'.repeat(100_000)}\r\n\r\nbody\r\n`)]));
    const cut = await call('GET', `/quarantine/${long.id}`, { token: TOKEN });
    expect(cut.body.headersTruncated).toBe(true);
    expect(cut.body.headers.length).toBe(64 * 1024);
    expect((await call('GET', '/quarantine/not-an-id', { token: TOKEN })).status).toBe(400);
    expect((await call('GET', '/quarantine/..%2F..%2Fetc%2Fpasswd', { token: TOKEN })).status).toBe(400);
    expect((await call('GET', `/quarantine/${UNKNOWN_ID}`, { token: TOKEN })).status).toBe(404);
  });

  it('lists and shows entries only with the token; stats, counts alone, without', async () => {
    for (const path of ['/quarantine', '/quarantine?state=held', `/quarantine/${ids[0]}`, '/quarantine/not-an-id', `/quarantine/${UNKNOWN_ID}`, `/quarantine/${ids[0]}/release`]) {
      for (const options of [{}, { token: 'x' }, { token: `${TOKEN}0` }]) {
        const answer = await call('GET', path, options);
        expect(answer.status, `GET ${path} ${JSON.stringify(options)}`).toBe(401);
        expect(JSON.stringify(answer.body)).not.toMatch(/192\.0\.2|sender\.test|Subject/);
      }
    }
    const head = await fetch(`http://${admin}/quarantine/${ids[0]}`, { method: 'HEAD' });
    expect(head.status).toBe(401);
    configuredToken = null;
    expect((await call('GET', '/quarantine', { token: TOKEN })).status).toBe(401);
    expect((await call('GET', '/quarantine/stats')).status).toBe(200);
  });
});

describe('quarantine admin API: changes need the token', () => {
  const changes = (): Array<[string, string, string?]> => [
    ['POST', `/quarantine/${ids[0]}/release`],
    ['POST', `/quarantine/${ids[0]}/release?now=1`],
    ['POST', '/quarantine/release', '{"all":true,"now":true}'],
    ['POST', '/quarantine/release', '{"ids":["bad"]}'],
    ['DELETE', `/quarantine/${ids[0]}`],
    ['DELETE', `/quarantine/${UNKNOWN_ID}`],
    ['DELETE', '/quarantine?olderThan=1m'],
  ];

  async function expectAllRefused(token: string | undefined): Promise<void> {
    for (const [method, path, body] of changes()) {
      const answer = await call(method, path, { ...(token === undefined ? {} : { token }), ...(body === undefined ? {} : { body }) });
      expect(answer.status, `${method} ${path}`).toBe(401);
    }
    // From the spool itself: without a configured token the API's list is refused too.
    expect(spool.list({}).map((entry) => entry.id)).toEqual(ids);
    expect(spool.stats().entries).toBe(3);
    expect(releaseCalls).toEqual([]);
  }

  it('refuses every change without a token, and changes nothing', () => expectAllRefused(undefined));
  it('refuses a wrong token of any length', async () => {
    await expectAllRefused('x');
    await expectAllRefused(TOKEN.replace(/.$/, 'X'));
    await expectAllRefused(`${TOKEN}0`);
  });
  it('refuses even the right token when none is configured', async () => {
    configuredToken = null;
    await expectAllRefused(TOKEN);
    expect((await call('POST', '/quarantine/release', { token: TOKEN, body: '{"all":true}' })).body.error).toMatch(/no admin token configured/);
  });
});

describe('quarantine admin API: changes with the token', () => {
  it('releases one entry, at the scheduler’s pace or now', async () => {
    expect((await call('POST', `/quarantine/${ids[0]}/release`, { token: TOKEN })).body).toEqual({ results: [{ id: ids[0], outcome: 'scheduled' }] });
    await call('POST', `/quarantine/${ids[1]}/release?now=1`, { token: TOKEN });
    expect(releaseCalls).toEqual([{ ids: [ids[0]], force: false }, { ids: [ids[1]], force: true }]);
    expect((await call('POST', '/quarantine/bad-id/release', { token: TOKEN })).status).toBe(400);
    expect((await call('POST', `/quarantine/${UNKNOWN_ID}/release`, { token: TOKEN })).status).toBe(404);
    expect((await call('POST', `/quarantine/${ids[0]}/release?now=maybe`, { token: TOKEN })).status).toBe(400);
    expect(releaseCalls).toHaveLength(2);
  });

  it('releases by ids, by source or all, and refuses bodies it cannot read', async () => {
    const release = (body: string) => call('POST', '/quarantine/release', { token: TOKEN, body });
    const byIds = await release(JSON.stringify({ ids: [ids[2], UNKNOWN_ID] }));
    expect(byIds.body.results).toEqual([{ id: ids[2], outcome: 'scheduled' }, { id: UNKNOWN_ID, outcome: 'not-found' }]);
    await release('{"source":"192.0.2.0/24","now":true}');
    await release('{"all":true}');
    expect(releaseCalls).toEqual([{ ids: [ids[2]], force: false }, { ids: [ids[0], ids[1]], force: true }, { ids, force: false }]);
    for (const bad of ['not json', '[]', '{}', '{"all":true,"source":"192.0.2.0/24"}', '{"all":false}', '{"ids":[]}',
      '{"ids":["../x"]}', '{"source":"192.0.2.0/99"}', '{"all":true,"now":"yes"}', '{"all":true,"extra":1}']) {
      expect((await release(bad)).status, bad).toBe(400);
    }
    expect((await release(JSON.stringify({ ids: Array.from({ length: 3000 }, () => UNKNOWN_ID) }))).status).toBe(413);
    expect(releaseCalls).toHaveLength(3);
  });

  it('answers 408 to a body that stops coming, without releasing anything', async () => {
    const socket = connect({ host: '127.0.0.1', port: Number(admin.split(':')[1]) });
    socket.write(`POST /quarantine/release HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${TOKEN}\r\ncontent-length: 100\r\n\r\n{"all":`);
    const [reply] = (await once(socket, 'data')) as [Buffer];
    socket.destroy();
    expect(reply.toString()).toMatch(/^HTTP\/1\.1 408 /);
    expect(releaseCalls).toEqual([]);
  });

  it('deletes by id and by age', async () => {
    expect((await call('DELETE', `/quarantine/${ids[1]}`, { token: TOKEN })).body).toEqual({ removed: [ids[1]] });
    expect(spool.get(ids[1])).toBeUndefined();
    expect((await call('DELETE', '/quarantine/bad-id', { token: TOKEN })).status).toBe(400);
    expect((await call('DELETE', `/quarantine/${UNKNOWN_ID}`, { token: TOKEN })).status).toBe(404);
    expect((await call('DELETE', '/quarantine', { token: TOKEN })).status).toBe(400);
    expect((await call('DELETE', '/quarantine?olderThan=soon', { token: TOKEN })).status).toBe(400);
    expect((await call('DELETE', '/quarantine?olderThan=7d', { token: TOKEN })).body).toEqual({ removed: [ids[0]], skipped: [] });
    expect(await listed()).toEqual([ids[2]]);
    expect(spool.stats().entries).toBe(1);
  });
});

describe('smtp-pushback quarantine', () => {
  async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ out: string; err: string; exitCode: number }> {
    let out = '';
    let err = '';
    let exitCode = 0;
    const program = new Command().exitOverride();
    registerQuarantineCommands(program, async (options) => options.admin, {
      out: (text) => void (out += text), err: (text) => void (err += text), fail: (code) => void (exitCode = code), env,
    });
    await program.parseAsync(['node', 'smtp-pushback', 'quarantine', ...args]);
    return { out, err, exitCode };
  }

  it('lists, shows and counts as tables or JSON', async () => {
    const withToken = { PUSHBACK_ADMIN_TOKEN: TOKEN };
    const table = await cli(['list', '--admin', admin], withToken);
    expect(table.exitCode).toBe(0);
    expect(table.out.split('\n')[0]).toMatch(/^id\s+received\s+state\s+client\s+sender/);
    for (const id of ids) expect(table.out).toContain(id);
    expect(table.out).toContain('3 entries');
    const filtered = JSON.parse((await cli(['list', '--admin', admin, '--json', '--source', '198.51.100.0/24', '--token', TOKEN])).out);
    expect(filtered.entries.map((entry: EntryMeta) => entry.id)).toEqual([ids[2]]);
    expect((await cli(['list', '--admin', admin, '--since', '2h'], withToken)).out).toContain('2 entries');
    const shown = await cli(['show', ids[0], '--admin', admin], withToken);
    expect(shown.out).toMatch(/^id {8}\S+/);
    expect(shown.out).toContain('client    192.0.2.1:');
    expect(shown.out).toContain('Subject: x');
    expect((await cli(['stats', '--admin', admin])).out).toMatch(/^entries {2}3 \(held 3, releasing 0/);
    expect(JSON.parse((await cli(['stats', '--admin', admin, '--json'])).out)).toMatchObject({ entries: 3 });
  });

  it('releases and deletes with the token from the environment or --token', async () => {
    const released = await cli(['release', '--all', '--now', '--admin', admin], { PUSHBACK_ADMIN_TOKEN: TOKEN });
    expect(released).toMatchObject({ exitCode: 0, err: '' });
    expect(released.out).toContain('3 released');
    expect(releaseCalls).toEqual([{ ids, force: true }]);
    await cli(['release', ids[0], '--admin', admin, '--token', TOKEN]);
    expect(releaseCalls[1]).toEqual({ ids: [ids[0]], force: false });
    const old = await cli(['delete', '--older-than', '7d', '--admin', admin, '--token', TOKEN]);
    expect(old.out).toBe('removed 1 entries older than 7d\n');
    const byId = await cli(['delete', ids[1], UNKNOWN_ID, '--admin', admin, '--token', TOKEN]);
    expect(byId.exitCode).toBe(1);
    expect(byId.out).toContain(`removed  ${ids[1]}`);
    expect(byId.out).toMatch(new RegExp(`FAILED   ${UNKNOWN_ID}: .*404`));
    expect(await listed()).toEqual([ids[2]]);
  });

  it('fails clearly: no or wrong token, bad selection, bad id, no listener', async () => {
    const noToken = await cli(['release', '--all', '--admin', admin]);
    expect(noToken.exitCode).toBe(1);
    expect(noToken.err).toMatch(/admin token missing or wrong \(pass --token or set PUSHBACK_ADMIN_TOKEN\)/);
    const wrong = await cli(['delete', ids[0], '--admin', admin, '--token', 'nope']);
    expect(wrong).toMatchObject({ exitCode: 1, out: '' });
    expect(wrong.err).toContain('admin token missing or wrong');
    expect(releaseCalls).toEqual([]);
    expect(spool.stats().entries).toBe(3);
    expect((await cli(['release', ids[0], '--all', '--admin', admin, '--token', TOKEN])).err).toMatch(/exactly one/);
    expect((await cli(['delete', '--admin', admin, '--token', TOKEN])).exitCode).toBe(1);
    expect((await cli(['show', 'bad-id', '--admin', admin, '--token', TOKEN])).err).toMatch(/400 not an entry id/);
    expect((await cli(['list', '--admin', admin, '--source', 'nonsense', '--token', TOKEN])).err).toMatch(/400/);
    for (const read of [['list'], ['show', ids[0]]]) {
      const refused = await cli([...read, '--admin', admin]);
      expect(refused).toMatchObject({ exitCode: 1, out: '' });
      expect(refused.err).toMatch(/admin token missing or wrong \(pass --token or set PUSHBACK_ADMIN_TOKEN\)/);
    }
    const closed = `127.0.0.1:${await closedPort()}`;
    const unreachable = await cli(['stats', '--admin', closed]);
    expect(unreachable.exitCode).toBe(1);
    expect(unreachable.err).toBe(`smtp-pushback quarantine: cannot reach the admin listener at ${closed}: ECONNREFUSED\n`);
  });
});
