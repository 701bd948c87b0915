// `smtp-pushback quarantine list|show|release|delete|stats`: the operator's view of a running proxy's quarantine.
// The spool belongs to the proxy (one process per spool directory), so every command goes through the admin API
// (src/admin/quarantine-routes.ts); every call carries the admin token (reading entries needs it too). Tables for people, --json for scripts; any
// failure prints one clear line and sets a non-zero exit code. What the tables and lines show comes from senders
// (headers, addresses, HELO) and passes through terminalSafe; --json is JSON, whose escaping is the reader's.
// A bulk release (--all, --source) watches the held count while the proxy works and, when stderr is a terminal,
// shows it as one progress line there (entries done of those selected, and their rate); piped, nothing extra.
import { Command, InvalidArgumentError } from 'commander';
import type { EntryMeta } from '../quarantine/spool-entry.js';
import type { SpoolStats } from '../quarantine/spool.js';
import { formatCount, ProgressLine, type ProgressStream } from './progress.js';
import { terminalSafe } from './terminal-safe.js';

export type AdminAddressLookup = (opts: { admin?: string; config?: string }) => Promise<string | undefined>;

/** Where the commands write and how they fail; tests capture both. */
export interface QuarantineIo {
  out(text: string): void;
  err(text: string): void;
  /** Marks the run failed: process.exitCode by default. */
  fail(exitCode: number): void;
  env: NodeJS.ProcessEnv;
  /** Where a bulk release's progress line goes when it is a terminal (process.stderr); absent: none. */
  progress?: ProgressStream;
}

const processIo: QuarantineIo = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  fail: (exitCode) => void (process.exitCode = exitCode),
  env: process.env,
  progress: process.stderr,
};

interface CommonOptions {
  admin?: string;
  config?: string;
  token?: string;
  json?: boolean;
  timeout: number;
}

interface ReleaseResult {
  id: string;
  outcome: string;
  detail?: string;
}

class CommandError extends Error {}

const RESULT_ROWS_SHOWN = 100;
/** How often a bulk release's progress asks for the held count, and how long each such ask may take. */
const PROGRESS_POLL_MS = 500;
const PROGRESS_POLL_TIMEOUT_MS = 2_000;

export function registerQuarantineCommands(program: Command, adminAddress: AdminAddressLookup, io: QuarantineIo = processIo): Command {
  const quarantine = program.command('quarantine').description("a running proxy's quarantine, through its admin listener");

  const common = (command: Command, timeoutSeconds = 10): Command => command
    .option('--admin <host:port>', 'admin listener (default: PUSHBACK_ADMIN, the policy, or 127.0.0.1:8025)')
    .option('-c, --config <file>', 'policy file to take admin.listen from', io.env.PUSHBACK_POLICY)
    .option('--token <token>', 'admin token (default: PUSHBACK_ADMIN_TOKEN, which keeps it out of ps)')
    .option('--json', 'print JSON instead of a table')
    .option('--timeout <seconds>', 'give up on the admin listener after this long', positiveNumber, timeoutSeconds);

  /** Resolves the listener, runs the work, and turns any failure into one line and exit code 1. */
  const action = <O extends CommonOptions, A extends unknown[]>(work: (client: AdminClient, options: O, ...args: A) => Promise<void>) =>
    async (...args: unknown[]): Promise<void> => {
      const options = (args.at(-1) as Command).opts<O>();
      const address = await adminAddress(options);
      if (!address) return;
      const client = new AdminClient(address, options.token ?? io.env.PUSHBACK_ADMIN_TOKEN, options.timeout * 1000);
      try {
        await work(client, options, ...(args.slice(0, -2) as A));
      } catch (error) {
        io.err(terminalSafe(`smtp-pushback quarantine: ${(error as Error).message}\n`));
        io.fail(1);
      }
    };

  common(quarantine.command('list').description('entries held, oldest first'))
    .option('--source <cidr>', 'only clients inside this prefix (or this address)')
    .option('--since <time>', 'only entries received since: ISO 8601, epoch ms, or an age like 12h')
    .option('--state <state>', 'only entries in this state: held, releasing, released, rejected')
    .option('--limit <n>', 'at most this many entries (the proxy caps it at 10000)', positiveNumber, 1000)
    .action(action(async (client, options: CommonOptions & { source?: string; since?: string; state?: string; limit: number }) => {
      const query = new URLSearchParams({ limit: String(Math.round(options.limit)) });
      if (options.source) query.set('source', options.source);
      if (options.since) query.set('since', options.since);
      if (options.state) query.set('state', options.state);
      const answer = await client.call<{ total: number; entries: EntryMeta[] }>('GET', `/quarantine?${query}`);
      io.out(options.json ? toJson(answer) : formatEntryList(answer.entries, answer.total));
    }));

  common(quarantine.command('show').description('one entry: its record and the message headers').argument('<id>', 'entry id'))
    .action(action(async (client, options, id: string) => {
      const answer = await client.call<{ entry: EntryMeta; headers: string; headersTruncated: boolean }>('GET', `/quarantine/${encodeURIComponent(id)}`);
      io.out(options.json ? toJson(answer) : formatEntry(answer.entry, answer.headers, answer.headersTruncated));
    }));

  common(quarantine.command('release').description('hand entries to Postfix: at the next off-peak window, or --now')
    .argument('[ids...]', 'entry ids (held ones, or rejected ones to try again)'), 120)
    .option('--source <cidr>', 'every held entry from clients inside this prefix')
    .option('--all', 'every held entry')
    .option('--now', 'skip the off-peak wait and the load checks')
    .action(action(async (client, options: CommonOptions & { source?: string; all?: boolean; now?: boolean }, ids: string[]) => {
      const selectors = [ids.length > 0, options.source !== undefined, options.all === true].filter(Boolean).length;
      if (selectors !== 1) throw new CommandError('name entry ids, or --source CIDR, or --all (exactly one of them)');
      const selection = ids.length > 0 ? { ids } : options.source !== undefined ? { source: options.source } : { all: true };
      const progress = new ProgressLine(io.progress);
      const watch = progress.enabled && ids.length === 0 ? await watchRelease(client, options.source, progress) : undefined;
      let answer: { results: ReleaseResult[] };
      try {
        answer = await client.call<{ results: ReleaseResult[] }>('POST', '/quarantine/release', { ...selection, now: options.now === true });
      } finally {
        await watch?.stop();
      }
      io.out(options.json ? toJson(answer) : formatReleaseResults(answer.results));
      if (answer.results.some((result) => result.outcome === 'not-found')) io.fail(1);
    }));

  common(quarantine.command('delete').description('remove entries for good (the mail is lost)').argument('[ids...]', 'entry ids'), 120)
    .option('--older-than <age>', 'every entry received longer ago than this: 30m, 12h, 7d')
    .action(action(async (client, options: CommonOptions & { olderThan?: string }, ids: string[]) => {
      if ((ids.length > 0) === (options.olderThan !== undefined)) throw new CommandError('name entry ids or --older-than AGE (one of them)');
      if (options.olderThan !== undefined) {
        const answer = await client.call<{ removed: string[]; skipped: string[] }>('DELETE', `/quarantine?olderThan=${encodeURIComponent(options.olderThan)}`);
        io.out(options.json ? toJson(answer) : terminalSafe(`removed ${answer.removed.length} entries older than ${options.olderThan}`
          + (answer.skipped.length > 0 ? `; ${answer.skipped.length} being released were left alone` : '') + '\n'));
        return;
      }
      const removed: string[] = [];
      const failed: Array<{ id: string; error: string }> = [];
      for (const id of ids) {
        try {
          await client.call('DELETE', `/quarantine/${encodeURIComponent(id)}`);
          removed.push(id);
        } catch (error) {
          // A wrong token fails every id alike: say it once.
          if (error instanceof UnauthorisedError) throw error;
          failed.push({ id, error: (error as Error).message });
        }
      }
      io.out(options.json ? toJson({ removed, failed }) : terminalSafe([...removed.map((id) => `removed  ${id}`), ...failed.map((entry) => `FAILED   ${entry.id}: ${entry.error}`)].join('\n') + '\n'));
      if (failed.length > 0) io.fail(1);
    }));

  common(quarantine.command('stats').description('entries and bytes held, by state'))
    .action(action(async (client, options) => {
      const stats = await client.call<SpoolStats>('GET', '/quarantine/stats');
      io.out(options.json ? toJson(stats) : formatStats(stats));
    }));

  return quarantine;
}

/**
 * While a bulk release runs: the held entries of the selection (all, or inside `source`), counted before it
 * and then every PROGRESS_POLL_MS; what left the held state is done (released, or rejected by Postfix; a 4xx
 * keeps an entry held for its retry). Undefined when nothing can be counted; a failed poll only skips a redraw.
 */
async function watchRelease(client: AdminClient, source: string | undefined, progress: ProgressLine): Promise<{ stop(): Promise<void> } | undefined> {
  const poller = client.withTimeout(PROGRESS_POLL_TIMEOUT_MS);
  const query = new URLSearchParams({ state: 'held', limit: '1' });
  if (source !== undefined) query.set('source', source);
  const heldNow = async (): Promise<number> => (await poller.call<{ total: number }>('GET', `/quarantine?${query}`)).total;
  const selected = await heldNow().catch(() => undefined);
  if (selected === undefined || selected === 0) return undefined;
  let running = true;
  let wake: () => void = () => undefined;
  const loop = (async () => {
    while (running) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, PROGRESS_POLL_MS);
        wake = () => { clearTimeout(timer); resolve(); };
      });
      const held = running ? await heldNow().catch(() => undefined) : undefined;
      if (held === undefined) continue;
      const done = Math.min(selected, Math.max(0, selected - held));
      progress.update(done, (rate) => `quarantine release: ${formatCount(done)}/${formatCount(selected)} entries done, ${formatCount(rate)}/s`);
    }
  })();
  return {
    async stop() {
      running = false;
      wake();
      await loop;
      progress.done();
    },
  };
}

class UnauthorisedError extends Error {}

/** One admin listener, one token; every answer that is not 2xx becomes an Error with the proxy's own reason. */
class AdminClient {
  constructor(private readonly address: string, private readonly token: string | undefined, private readonly timeoutMs: number) {}

  withTimeout(timeoutMs: number): AdminClient {
    return new AdminClient(this.address, this.token, timeoutMs);
  }

  async call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(`http://${this.address}${path}`, {
        method, headers, signal: AbortSignal.timeout(this.timeoutMs), ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (error) {
      throw new CommandError(describeFetchError(error as Error, this.address, this.timeoutMs));
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (response.status === 401) {
      const reason = (parsed as { error?: string } | undefined)?.error;
      const hint = this.token ? '' : ' (pass --token or set PUSHBACK_ADMIN_TOKEN)';
      throw new UnauthorisedError(`admin token missing or wrong${hint}${reason && reason !== 'admin token missing or wrong' ? `: the proxy says "${reason}"` : ''}`);
    }
    if (!response.ok) {
      const reason = (parsed as { error?: string } | undefined)?.error ?? text.trim().slice(0, 200);
      const notWired = response.status === 404 && parsed === undefined ? ' (does this proxy have the quarantine API?)' : '';
      throw new CommandError(`${method} ${path.split('?')[0]}: ${response.status} ${reason}${notWired}`);
    }
    if (parsed === undefined) throw new CommandError(`${method} ${path.split('?')[0]}: the answer is not JSON`);
    return parsed as T;
  }
}

function describeFetchError(error: Error, address: string, timeoutMs: number): string {
  if (error.name === 'TimeoutError' || error.name === 'AbortError') return `no answer from the admin listener at ${address} within ${timeoutMs / 1000} s`;
  const cause = (error as Error & { cause?: { code?: string; message?: string } }).cause;
  return `cannot reach the admin listener at ${address}: ${cause?.code ?? cause?.message ?? error.message}`;
}

function positiveNumber(value: string): number {
  const number = Number(value);
  if (value.trim() === '' || !Number.isFinite(number) || number <= 0) throw new InvalidArgumentError('expected a positive number');
  return number;
}

function toJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** Columns padded to their widest cell, as shown (escaped); the listed columns are numbers and align right. */
function table(header: string[], rawRows: string[][], rightAligned: ReadonlySet<number>): string {
  const rows = rawRows.map((cells) => cells.map(terminalSafe));
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((cells) => (cells[column] ?? '').length)));
  const line = (cells: string[]): string => cells
    .map((cell, column) => (rightAligned.has(column) ? cell.padStart(widths[column] as number) : cell.padEnd(widths[column] as number)))
    .join('  ').trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}

export function formatEntryList(entries: readonly EntryMeta[], total: number): string {
  if (total === 0) return 'no entries\n';
  const rows = entries.map((entry) => [
    entry.id, isoSeconds(entry.receivedAtMs), entry.state, entry.client.address, entry.mailFrom.address || '<>',
    String(entry.recipients.length), formatBytes(entry.sizeBytes), String(entry.attempts), entry.verdict.reasons.join(','),
  ]);
  const footer = entries.length < total ? `${entries.length} of ${total} entries shown (--limit)\n` : `${total} entries\n`;
  return table(['id', 'received', 'state', 'client', 'sender', 'rcpts', 'size', 'tries', 'reasons'], rows, new Set([5, 6, 7])) + footer;
}

export function formatEntry(entry: EntryMeta, headers: string, headersTruncated: boolean): string {
  const params = Object.entries(entry.mailFrom.params).map(([name, value]) => (value === true ? name : `${name}=${value}`)).join(' ');
  const lines = [
    `id        ${entry.id}`,
    `received  ${isoSeconds(entry.receivedAtMs)}`,
    `state     ${entry.state}, ${entry.attempts} release attempts, next ${isoSeconds(entry.nextAttemptAtMs)}`,
    `client    ${entry.client.address}:${entry.client.port}${entry.client.hostname ? ` (${entry.client.hostname})` : ''}, HELO ${entry.client.helo}`,
    `from      <${entry.mailFrom.address}>${params ? ` ${params}` : ''}`,
    `to        ${entry.recipients.map((recipient) => `<${recipient}>`).join(', ')}`,
    `size      ${entry.sizeBytes} bytes`,
    `verdict   score ${entry.verdict.score}: ${entry.verdict.reasons.join(', ') || '(no reasons)'}`,
  ];
  if (entry.lastError) lines.push(`error     ${entry.lastError}`);
  lines.push('', headers.replace(/\r\n/g, '\n').trimEnd());
  if (headersTruncated) lines.push('[headers cut short]');
  return terminalSafe(`${lines.join('\n')}\n`);
}

export function formatReleaseResults(results: readonly ReleaseResult[]): string {
  if (results.length === 0) return 'nothing to release\n';
  const counts = new Map<string, number>();
  for (const result of results) counts.set(result.outcome, (counts.get(result.outcome) ?? 0) + 1);
  const summary = [...counts].map(([outcome, count]) => `${count} ${outcome}`).join(', ');
  // A bulk release can name a million entries: past a screenful only the counts help (--json has every one).
  if (results.length > RESULT_ROWS_SHOWN) return `${summary} (${results.length} entries; --json lists each)\n`;
  return table(['id', 'outcome', 'detail'], results.map((result) => [result.id, result.outcome, result.detail ?? '']), new Set()) + `${summary}\n`;
}

export function formatStats(stats: SpoolStats): string {
  const states = Object.entries(stats.byState).map(([state, count]) => `${state} ${count}`).join(', ');
  return terminalSafe(`entries  ${stats.entries} (${states})\nbytes    ${stats.bytes} (${formatBytes(stats.bytes)})\n`);
}
