// Cost of the offline SFDS command (`npm run bench:sfds`): writes nfdump 1.7.1 CSV (the layout the tests
// use, test/support/nfdump-csv.ts) of BENCH_SFDS_LINES SMTP flows spread over a few thousand and over
// fifty thousand sources, five hours of them, then runs the built `smtp-pushback sfds FILE --json` on
// each and reports wall time, lines per second and the command's peak RSS (its own
// process.resourceUsage().maxRSS, read at exit through a preload, so no external `time` is needed).
// Everything lives in a temporary directory, removed afterwards. Environment: BENCH_SFDS_LINES (1000000).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { NFDUMP_171_HEADER, nfdumpCsvLine } from '../test/support/nfdump-csv.js';
import { buildDist, machineInfo, positiveNumber, ROOT } from './servers.js';

const lines = Math.round(positiveNumber('BENCH_SFDS_LINES', 1_000_000));
const progress = (text: string): void => void process.stderr.write(`${text}\n`);
const START_MS = Date.UTC(2003, 10, 2, 0, 0, 0);
const SPAN_MS = 5 * 3_600_000;

async function writeCsv(file: string, sources: number): Promise<void> {
  const out = createWriteStream(file);
  const write = async (text: string): Promise<void> => {
    if (!out.write(text)) await once(out, 'drain');
  };
  await write(`${NFDUMP_171_HEADER}\n`);
  for (let index = 0; index < lines; index += 1) {
    const source = index % sources;
    const startMs = START_MS + Math.floor((index / lines) * SPAN_MS);
    await write(`${nfdumpCsvLine({
      startMs,
      endMs: startMs + 2_000,
      source: `10.${(source >> 16) & 255}.${(source >> 8) & 255}.${source & 255}`,
      destination: '192.0.2.25',
      sourcePort: 1024 + (index % 60_000),
      destinationPort: 25,
      packets: 12,
      bytes: 1_800,
    })}\n`);
  }
  out.end();
  await once(out, 'finish');
}

async function runSfds(file: string, preload: string, rssFile: string): Promise<{ seconds: number; maxRssMb: number; exitCode: number | null }> {
  const started = process.hrtime.bigint();
  const child = spawn(process.execPath, ['--require', preload, join(ROOT, 'dist/cli/main.js'), 'sfds', file, '--json'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, SFDS_BENCH_RSS_FILE: rssFile },
  });
  const [exitCode] = (await once(child, 'exit')) as [number | null];
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { seconds, maxRssMb: Number(readFileSync(rssFile, 'utf8')) / 1024, exitCode };
}

buildDist(progress);
const directory = mkdtempSync(join(os.tmpdir(), 'pushback-bench-sfds-'));
const rows: string[] = [];
try {
  const preload = join(directory, 'max-rss.cjs');
  writeFileSync(preload, "process.on('exit', () => require('node:fs').writeFileSync(process.env.SFDS_BENCH_RSS_FILE, String(process.resourceUsage().maxRSS)));\n");
  for (const sources of [2_000, 50_000]) {
    const file = join(directory, `flows-${sources}.csv`);
    progress(`writing ${lines} lines from ${sources} sources ...`);
    await writeCsv(file, sources);
    progress('running smtp-pushback sfds ...');
    const result = await runSfds(file, preload, join(directory, 'rss'));
    if (result.exitCode !== 0) throw new Error(`smtp-pushback sfds exited with ${result.exitCode}`);
    rows.push(`| ${lines} | ${(statSync(file).size / 1e6).toFixed(0)} MB | ${sources} | ${result.seconds.toFixed(1)} | ${Math.round(lines / result.seconds)} | ${result.maxRssMb.toFixed(0)} MB |`);
  }
} finally {
  rmSync(directory, { recursive: true, force: true });
}
process.stdout.write([
  `smtp-pushback sfds on nfdump CSV, one run each; ${JSON.stringify(machineInfo())}`,
  '',
  '| lines | file | sources | seconds | lines/s | peak RSS |',
  '|---|---|---|---|---|---|',
  ...rows,
  '',
  'reproduce: npm run bench:sfds',
  '',
].join('\n'));
