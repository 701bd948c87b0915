// `smtp-pushback sfds FILE…`: SFDS offline, on the input the paper used, router NetFlow.
// Reads nfdump CSV (or nfcapd files through nfdump) in the order given, keeps SMTP flows (TCP to the policy's
// pushback.sfds.smtpPorts, or --port), replays them through the live detector's aggregator and thresholds,
// and prints the top-N table and the flooding sources. Malformed lines go to stderr as FILE:LINE: reason
// (a reason quotes the line's fields, so stderr's lines pass through terminalSafe). When stderr is a terminal,
// one progress line there counts files, lines and flows read and lines a second; piped, nothing extra.
// Exit codes: 0 every input read; 1 the policy or an option is unusable (nothing read); 2 an input could not
// be read to its end (the report still covers everything that was read).
import { InvalidArgumentError, Option, type Command } from 'commander';
import { defaultPolicy, formatProblem, loadPolicyFile } from '../config/load.js';
import { NetflowCsvReader } from '../offline/netflow-csv.js';
import { InputError, inputKind, inputLines, inputName } from '../offline/netflow-input.js';
import { SfdsReplay } from '../offline/sfds-replay.js';
import { formatCount, ProgressLine, type ProgressStream } from './progress.js';
import { formatSfdsReport, sfdsReportJson, type InputSummary } from './sfds-report.js';
import { terminalSafe } from './terminal-safe.js';

export const SFDS_EXIT = { ok: 0, unusable: 1, unreadableInput: 2 } as const;

/** Malformed lines reported one by one per input; the rest are counted. */
export const MALFORMED_LINES_SHOWN = 100;

/** Lines read between two looks at the progress clock: a per-line look would cost the replay's hot loop. */
const PROGRESS_EVERY_LINES = 256;

export interface SfdsCommandOptions {
  top: number;
  set?: string;
  port: number[];
  maxSources?: number;
  /** Seconds (commander names it after --idle-timeout). */
  idleTimeout: number;
  config?: string;
  json?: boolean;
}

export interface Output {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Where the progress line goes when it is a terminal (process.stderr); absent: none. */
  progress?: ProgressStream;
}

/** Where reading stands across every input, for the progress line. */
interface ReadProgress {
  line: ProgressLine;
  files: number;
  fileIndex: number;
  lines: number;
  flows: number;
}

export function registerSfdsCommand(program: Command): void {
  program
    .command('sfds')
    .description('SFDS (SMTP flooding detection) on router NetFlow: nfdump CSV or nfcapd files -> top-N sources and flooding sources')
    .argument('<files...>', 'nfdump -o csv output, or nfcapd files (read with nfdump -r); - is standard input; in time order')
    .option('-n, --top <count>', 'rows in the top-N table', positiveInteger, 20)
    .option('--set <name>', 'threshold set of the top-N table (default: the first)')
    .addOption(new Option('--port <port>', 'SMTP destination port, repeatable').argParser(collectPort).default([], "the policy's pushback.sfds.smtpPorts"))
    .option('--max-sources <count>', 'sources tracked at once (default: the policy\'s pushback.sfds.maxSources)', positiveInteger)
    .option('--idle-timeout <seconds>', 'give up on an input that yields no line for this long', positiveInteger, 120)
    .option('-c, --config <file>', 'policy YAML file (threshold sets, ports)', process.env.PUSHBACK_POLICY)
    .option('--json', 'print one JSON object')
    .action(async (files: string[], options: SfdsCommandOptions) => {
      process.exitCode = await runSfdsCommand(files, options, {
        stdout: (text) => process.stdout.write(text),
        stderr: (text) => process.stderr.write(text),
        progress: process.stderr,
      });
    });
}

export async function runSfdsCommand(files: readonly string[], options: SfdsCommandOptions, rawOutput: Output): Promise<number> {
  const progressLine = new ProgressLine(rawOutput.progress);
  const output: Output = {
    stdout: rawOutput.stdout,
    stderr: (text) => {
      progressLine.clear();
      rawOutput.stderr(terminalSafe(text));
    },
  };
  const policy = options.config ? await loadPolicyFile(options.config) : defaultPolicy();
  if (!policy.ok) {
    for (const problem of policy.problems) output.stderr(`${formatProblem(problem)}\n`);
    return SFDS_EXIT.unusable;
  }
  const { sets, smtpPorts: policyPorts } = policy.policy.pushback.sfds;
  if (options.set !== undefined && !sets.some((set) => set.name === options.set)) {
    output.stderr(`no SFDS threshold set named "${options.set}" (the policy has ${sets.map((set) => set.name).join(', ')})\n`);
    return SFDS_EXIT.unusable;
  }
  const smtpPorts = options.port.length > 0 ? [...new Set(options.port)] : [...policyPorts];
  const maxSources = options.maxSources ?? policy.policy.pushback.sfds.maxSources;
  const replay = new SfdsReplay({ sets, maxSources });
  const inputs: InputSummary[] = [];
  const progress: ReadProgress = { line: progressLine, files: files.length, fileIndex: 0, lines: 0, flows: 0 };
  for (const file of files) {
    progress.fileIndex += 1;
    inputs.push(await readInput(file, replay, smtpPorts, options.idleTimeout * 1_000, output, progress));
  }
  progress.line.done();

  const context = { inputs, smtpPorts, sets, maxSources, replay: replay.report(options.top, options.set) };
  output.stdout(options.json ? `${JSON.stringify(sfdsReportJson(context), null, 2)}\n` : terminalSafe(formatSfdsReport(context)));
  return inputs.some((input) => input.error !== undefined) ? SFDS_EXIT.unreadableInput : SFDS_EXIT.ok;
}

async function readInput(
  file: string, replay: SfdsReplay, smtpPorts: readonly number[], idleTimeoutMs: number, output: Output, progress: ReadProgress,
): Promise<InputSummary> {
  const name = inputName(file);
  const summary: InputSummary = { file: name, kind: undefined, lines: 0, flows: 0, otherRecords: 0, malformedLines: 0 };
  const reader = new NetflowCsvReader(new Set(smtpPorts));
  try {
    summary.kind = await inputKind(file, idleTimeoutMs);
    const lines = inputLines(file, summary.kind, {
      idleTimeoutMs,
      nfdumpFilter: `proto tcp and (${smtpPorts.map((port) => `dst port ${port}`).join(' or ')})`,
      onNfdumpMessage: (line) => output.stderr(`${name}: nfdump: ${line}\n`),
    });
    for await (const text of lines) {
      summary.lines += 1;
      if (progress.line.enabled && summary.lines % PROGRESS_EVERY_LINES === 0) showProgress(progress, summary);
      const line = reader.line(text);
      if (line.kind === 'flow') {
        summary.flows += 1;
        replay.add(line.record);
      } else if (line.kind === 'other') {
        summary.otherRecords += 1;
      } else if (line.kind === 'malformed') {
        summary.malformedLines += 1;
        if (summary.malformedLines <= MALFORMED_LINES_SHOWN) output.stderr(`${name}:${summary.lines}: ${line.reason}\n`);
      }
    }
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    summary.error = error.message;
    output.stderr(`${error.message}\n`);
  }
  progress.lines += summary.lines;
  progress.flows += summary.flows;
  if (summary.malformedLines > MALFORMED_LINES_SHOWN) {
    output.stderr(`${name}: ${summary.malformedLines - MALFORMED_LINES_SHOWN} more malformed lines not shown (${summary.malformedLines} in all)\n`);
  }
  return summary;
}

function showProgress(progress: ReadProgress, current: InputSummary): void {
  const lines = progress.lines + current.lines;
  progress.line.update(lines, (rate) => terminalSafe(`sfds: file ${progress.fileIndex}/${progress.files} (${current.file}), `)
    + `${formatCount(lines)} lines, ${formatCount(progress.flows + current.flows)} SMTP flows, ${formatCount(rate)} lines/s`);
}

function positiveInteger(value: string): number {
  const number = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(number) || number < 1) throw new InvalidArgumentError('expected a positive integer');
  return number;
}

function collectPort(value: string, previous: number[]): number[] {
  const port = Number(value);
  if (!/^\d+$/.test(value.trim()) || port < 1 || port > 65_535) throw new InvalidArgumentError('expected a port number, 1 to 65535');
  return [...previous, port];
}
