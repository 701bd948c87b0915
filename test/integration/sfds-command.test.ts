// `smtp-pushback sfds` as a process (the real CLI through tsx) on generated nfdump 1.7.1 CSV: one source over
// all three of the paper's thresholds and three that each miss one by exactly one, among other traffic and
// malformed lines; then files in order, standard input, the policy's ports and sets, exit codes, and a large
// file read as a stream.
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NFDUMP_171_HEADER, nfdumpCsv, nfdumpCsvLine, nfdumpSummary, nfdumpTime, type GeneratedFlow } from '../support/nfdump-csv.js';

const CLI = join(import.meta.dirname, '../../src/cli/main.ts');
const HOUR_MS = 3_600_000;
const T0 = Date.UTC(2003, 10, 2); // Nov 2nd 2003, the day of the paper's Fig. 2
const MX = '192.0.2.25';
const FLOODER = '163.25.154.253'; // the flooding host the paper names
const MISSES = { rate: '198.51.100.1', size: '198.51.100.2', duration: '198.51.100.3' };
const dir = mkdtempSync(join(tmpdir(), 'pushback-sfds-'));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** stdin: text to send and close; without it the child's standard input stays open and silent. */
function runCli(args: readonly string[], stdin?: string, env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const options = { timeout: 60_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, PUSHBACK_POLICY: '', ...env } };
    const child = execFile(process.execPath, ['--import', 'tsx', CLI, 'sfds', ...args], options, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') return reject(error);
      resolve({ code: typeof error?.code === 'number' ? error.code : 0, stdout, stderr });
    });
    if (stdin !== undefined) child.stdin!.end(stdin);
  });
}

/** `flows` SMTP flows an hour from `source` for `hours` hours from hour `fromHour`, spread evenly, each `packets` x `bytesPerPacket`. */
function hourly(source: string, fromHour: number, hours: number, flows: number, bytesPerPacket = 101, destinationPort = 25): GeneratedFlow[] {
  return Array.from({ length: hours * flows }, (_, index) => {
    const hour = fromHour + Math.floor(index / flows);
    const endMs = T0 + hour * HOUR_MS + Math.floor(((index % flows) * HOUR_MS) / flows) + 1_000;
    return { startMs: endMs - 2_000, endMs, source, destination: MX, sourcePort: 40_000 + (index % 20_000), destinationPort, packets: 10, bytes: bytesPerPacket * 10 };
  });
}

/** The server's answers (source port 25), UDP to port 25 and a few light senders: nothing SFDS counts as flooding. */
function otherTraffic(): GeneratedFlow[] {
  const answers = hourly(FLOODER, 0, 6, 181).map((flow) => ({ ...flow, source: MX, destination: FLOODER, sourcePort: 25, destinationPort: flow.sourcePort! }));
  const udp = hourly('203.0.113.9', 0, 7, 300).map((flow) => ({ ...flow, protocol: 'UDP' }));
  return [...answers, ...udp, ...hourly('192.0.2.77', 0, 7, 12, 400)];
}

const byEnd = (a: GeneratedFlow, b: GeneratedFlow): number => a.endMs - b.endMs;
const smtpFlows = [
  ...hourly(FLOODER, 0, 6, 181), // 181 > 180 flows an hour, 101 > 100 bytes a packet, 6 > 5 hours
  ...hourly(MISSES.rate, 0, 6, 180), // exactly 180 flows an hour
  ...hourly(MISSES.size, 0, 6, 181, 100), // exactly 100 bytes a packet
  ...hourly(MISSES.duration, 0, 5, 181), // exactly 5 hours
];
const allFlows = [...smtpFlows, ...otherTraffic()].sort(byEnd);
const smtpCount = smtpFlows.length + 7 * 12;

/** The CSV with two malformed lines put in at lines 101 and 2001 (the header is line 1). */
function csvWithMalformedLines(flows: readonly GeneratedFlow[]): { text: string; malformed: Array<[number, string]> } {
  const lines = nfdumpCsv(flows).trimEnd().split('\n');
  const truncated = lines[5]!.split(',').slice(0, 9).join(',');
  const badAddress = nfdumpCsvLine({ ...flows[0]!, source: '163.25.154', destinationPort: 25, protocol: 'TCP' });
  lines.splice(100, 0, truncated);
  lines.splice(2_000, 0, badAddress);
  return { text: `${lines.join('\n')}\n`, malformed: [[101, '9 fields, expected 48'], [2_001, 'source address "163.25.154"']] };
}

interface JsonReport {
  inputs: Array<{ file: string; kind: string; lines: number; flows: number; otherRecords: number; malformedLines: number; error?: string }>;
  flows: number;
  smtpPorts: number[];
  firstFlowAt: string;
  lastFlowAt: string;
  top: { set: string; at: string; sources: Array<{ source: string; flows: number; durationPeriods: number }> };
  flooding: Array<{ source: string; set: string; firstDetectedAt: string; flows: number; meanPacketBytes: number; flowsPerPeriod: number; durationPeriods: number }>;
}

describe('smtp-pushback sfds on nfdump CSV', { timeout: 90_000 }, () => {
  const { text, malformed } = csvWithMalformedLines(allFlows);
  const file = join(dir, 'nfdump-2003-11-02.csv');
  writeFileSync(file, text);

  it('finds the source over all three thresholds and none of those one short; reports malformed lines by number', async () => {
    const result = await runCli([file, '--json']);
    expect(result.code).toBe(0);
    expect(result.stderr.trimEnd().split('\n')).toEqual(malformed.map(([line, reason]) => `${file}:${line}: ${reason}`));
    const report = JSON.parse(result.stdout) as JsonReport;
    expect(report.inputs).toEqual([{
      file, kind: 'csv', lines: allFlows.length + 6, flows: smtpCount, otherRecords: allFlows.length - smtpCount, malformedLines: 2,
    }]);
    expect(report.smtpPorts).toEqual([25]);
    // Found at its 181st flow of the sixth hour (05:59:..), under the paper's hourly set only.
    expect(report.flooding).toEqual([expect.objectContaining({
      source: FLOODER, set: 'paper-hourly', flows: 6 * 181, meanPacketBytes: 101, flowsPerPeriod: 181, durationPeriods: 6,
      firstDetectedAt: `${nfdumpTime(hourly(FLOODER, 0, 6, 181).at(-1)!.endMs).replace(' ', 'T')}Z`, // nfdump prints whole seconds
    })]);
    // The end of the input is hour 6: the flooder's run (hours 0-5) is the complete periods before it.
    expect(report.lastFlowAt.startsWith('2003-11-02T06:')).toBe(true);
    expect(report.top.set).toBe('paper-hourly');
    expect(report.top.sources.find((row) => row.source === FLOODER)).toMatchObject({ flows: 6 * 181, durationPeriods: 6 });
    expect(report.top.sources.map((row) => row.source)).not.toContain(MX);
  });

  it('prints the top-N table (Fig. 2 columns) and the flooding sources with their set and numbers', async () => {
    const result = await runCli([file, '--top', '3']);
    expect(result.code).toBe(0);
    const lines = result.stdout.split('\n');
    const tableAt = lines.findIndex((line) => line.startsWith('source') && line.includes('flows/period'));
    expect(lines[tableAt]!.split(/\s{2,}/)).toEqual(['source', 'set', 'flows', 'packets', 'bytes', 'mean B/pkt', 'duration', 'flows/period']);
    // At 06:xx the flooder and the size miss are in a run of six hours; the rate and duration misses have
    // no run and nothing in the last hour, so the light sender of that hour comes third.
    expect(lines.slice(tableAt + 1, tableAt + 4).map((line) => line.split(/\s+/)[0])).toEqual([FLOODER, MISSES.size, '192.0.2.77']);
    expect(result.stdout).toContain('thresholds (formula 7, all strictly over): paper-hourly: > 100 B/packet, > 180 flows per 3600 s, > 5 periods');
    const flooding = lines.slice(lines.findIndex((line) => line.startsWith('flooding sources (1):')) + 2)[0]!;
    expect(flooding.split(/\s{2,}/).slice(0, 8)).toEqual([FLOODER, 'paper-hourly', '101.0', '181.0', '6', String(6 * 181), String(6 * 1_810), String(6 * 181 * 1_010)]);
  });

  it('aggregates across files given in time order as across one, and reads standard input as "-"', async () => {
    const half = Math.floor(allFlows.length / 2);
    const [first, second] = [join(dir, 'part-1.csv'), join(dir, 'part-2.csv')];
    writeFileSync(first, nfdumpCsv(allFlows.slice(0, half)));
    writeFileSync(second, nfdumpCsv(allFlows.slice(half)));
    const split = JSON.parse((await runCli([first, second, '--json'])).stdout) as JsonReport;
    const piped = JSON.parse((await runCli(['-', '--json'], nfdumpCsv(allFlows))).stdout) as JsonReport;
    const whole = JSON.parse((await runCli([file, '--json'])).stdout) as JsonReport;
    expect(split.flooding).toEqual(whole.flooding);
    expect(split.top).toEqual(whole.top);
    expect(piped.flooding).toEqual(whole.flooding);
    expect(piped.inputs[0]).toMatchObject({ file: 'stdin', kind: 'stdin', flows: smtpCount });
  });

  it('takes the ports and threshold sets from the policy, and --port over both', async () => {
    const policy = join(dir, 'policy.yaml');
    writeFileSync(policy, [
      'pushback:',
      '  sfds:',
      '    smtpPorts: [2525]',
      '    sets:',
      '      - { name: strict, periodSeconds: 3600, minMeanPacketBytes: 99, minFlowsPerPeriod: 179, minDurationPeriods: 4 }',
      '',
    ].join('\n'));
    const onPort2525 = join(dir, 'port-2525.csv');
    writeFileSync(onPort2525, nfdumpCsv(smtpFlows.map((flow) => ({ ...flow, destinationPort: 2525 })).sort(byEnd)));
    const strict = JSON.parse((await runCli([onPort2525, '-c', policy, '--json'])).stdout) as JsonReport;
    expect(strict.smtpPorts).toEqual([2525]);
    expect(strict.flooding.map((finding) => `${finding.source} ${finding.set}`).sort()).toEqual([FLOODER, ...Object.values(MISSES)].map((source) => `${source} strict`).sort());
    const overridden = JSON.parse((await runCli([onPort2525, '-c', policy, '--port', '25', '--port', '587', '--json'])).stdout) as JsonReport;
    expect(overridden).toMatchObject({ smtpPorts: [25, 587], flows: 0, flooding: [] });
  });

  it('exits 2 when an input cannot be read, still reporting the others; 1 on an unknown set or a bad policy', async () => {
    const missing = join(dir, 'nfcapd.200311020000');
    const result = await runCli([missing, file, '--json']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${missing}: ENOENT`);
    const report = JSON.parse(result.stdout) as JsonReport;
    expect(report.inputs[0]).toMatchObject({ file: missing, error: expect.stringContaining('ENOENT') });
    expect(report.flooding.map((finding) => finding.source)).toEqual([FLOODER]);

    const binary = join(dir, 'random.bin');
    writeFileSync(binary, Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x00, 0x01]));
    expect(await runCli([binary])).toMatchObject({ code: 2, stderr: expect.stringContaining('neither CSV text nor an nfcapd file') });

    // Standard input that stays open and silent is given up on after --idle-timeout, and the command ends.
    expect(await runCli(['-', '--idle-timeout', '1'])).toMatchObject({ code: 2, stderr: 'stdin: no data for 1000 ms\n' });

    expect(await runCli([file, '--set', 'nope'])).toMatchObject({ code: 1, stdout: '', stderr: expect.stringContaining('no SFDS threshold set named "nope"') });
    const badPolicy = join(dir, 'bad.yaml');
    writeFileSync(badPolicy, 'pushback:\n  sfds:\n    smtpPorts: [0]\n');
    expect(await runCli([file, '-c', badPolicy])).toMatchObject({ code: 1, stdout: '', stderr: expect.stringContaining('pushback.sfds.smtpPorts') });
  });
});

describe('nfcapd files', { timeout: 90_000 }, () => {
  // nfcapd's magic and a version, then nothing nfdump can read. (Real capture files: test/e2e/sfds-netflow.test.ts.)
  const broken = join(dir, 'nfcapd.200311021200');
  writeFileSync(broken, Buffer.concat([Buffer.from([0x0c, 0xa5, 0x02, 0x00]), Buffer.from('truncated')]));

  it('are read through nfdump, whose complaints are passed on and make the input unreadable', async () => {
    const result = await runCli([broken, '--json']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${broken}: nfdump: `);
    expect(result.stderr).toContain(`${broken}: nfdump reported an error reading it`);
    expect((JSON.parse(result.stdout) as JsonReport).inputs[0]).toMatchObject({ kind: 'nfcapd', flows: 0 });
  });

  it('need nfdump, and say so when it is not installed', async () => {
    const result = await runCli([broken], undefined, { PATH: join(dir, 'no-tools-here') });
    expect(result).toMatchObject({ code: 2, stderr: `${broken}: is an nfcapd file, and reading it needs nfdump, which is not installed (Debian: apt-get install nfdump)\n` });
  });
});

describe('a large file', { timeout: 90_000 }, () => {
  it('is read as a stream: 200,000 records from 2,000 sources over 10 hours', async () => {
    const records = 200_000;
    const sources = 2_000;
    const file = join(dir, 'large.csv');
    const out = createWriteStream(file);
    out.write(`${NFDUMP_171_HEADER}\n`);
    const summed: GeneratedFlow[] = [];
    for (let index = 0; index < records; index += 1) {
      const endMs = T0 + Math.floor((index * 10 * HOUR_MS) / records);
      const octet = index % sources;
      const flow: GeneratedFlow = { startMs: endMs - 1_000, endMs, source: `10.${octet >> 8}.${octet & 255}.1`, destination: MX, destinationPort: 25, packets: 12, bytes: 1_500 };
      if (!out.write(`${nfdumpCsvLine(flow)}\n`)) await once(out, 'drain');
      if (index < 2) summed.push(flow);
    }
    out.end(`${nfdumpSummary(summed).join('\n')}\n`);
    await once(out, 'finish');

    const result = await runCli([file, '--json', '--top', '5']);
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout) as JsonReport;
    expect(report.inputs[0]).toMatchObject({ lines: records + 4, flows: records, malformedLines: 0 });
    // 100 flows per source over 10 hours, 10 an hour: no flood; the table is the last hour, 10 flows each.
    expect(report.flooding).toEqual([]);
    expect(report.top.sources).toHaveLength(5);
    expect(report.top.sources.every((row) => row.flows === 10)).toBe(true);
  });
});
