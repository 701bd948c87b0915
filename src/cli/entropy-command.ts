// `smtp-pushback entropy`: the entropy status of windows the operator types in (comma lists of normal and
// abnormal pair counts), as an aligned table or JSON. Pure: takes strings, returns output and an exit code, so the
// commander wiring stays a one-liner and the behaviour is unit-tested without a process.
import { distanceForJson, windowEntropy, type WindowEntropy } from '../detect/entropy.js';

export interface EntropyCommandOptions {
  normal: string;
  abnormal: string;
  json?: boolean;
  deltaBits?: number;
  /**
   * Defaults to 0 here, not to the proxy's 20: the operator gives whole windows of their own (for instance the
   * paper's), so the command shows exactly what the paper's formula gives. Only P = 0 is reported quiet.
   */
  minPairs?: number;
}

export interface EntropyCommandResult {
  output: string;
  exitCode: number;
}

/** Exit code for unusable input, as commander and most CLIs use for usage errors. */
export const USAGE_EXIT_CODE = 2;

const COMMAND_DEFAULT_DELTA_BITS = 0.5;
const COMMAND_DEFAULT_MIN_PAIRS = 0;

/** One JSON row: exactly these fields; distance is null when infinite (see distanceForJson). */
export interface EntropyJsonRow {
  normal: number;
  abnormal: number;
  hNormal: number;
  hAbnormal: number;
  distance: number | null;
  status: number;
}

class UsageError extends Error {}

function parseCounts(flag: string, list: string): number[] {
  const items = list.split(',').map((item) => item.trim());
  if (list.trim() === '' || items.some((item) => item === '')) {
    throw new UsageError(`${flag} must be a comma-separated list of pair counts, got "${list}"`);
  }
  return items.map((item) => {
    if (!/^\d+$/.test(item)) {
      throw new UsageError(`${flag}: "${item}" is not a whole number of pairs >= 0`);
    }
    const count = Number(item);
    if (!Number.isSafeInteger(count)) throw new UsageError(`${flag}: "${item}" is too large`);
    return count;
  });
}

function checkOption(flag: string, value: number, integer: boolean): number {
  if (!Number.isFinite(value) || value < 0 || (integer && !Number.isInteger(value))) {
    throw new UsageError(`${flag} must be ${integer ? 'a whole number' : 'a number'} >= 0, got ${value}`);
  }
  return value;
}

function formatDistance(distanceBits: number): string {
  if (distanceBits === Number.POSITIVE_INFINITY) return '+inf';
  if (distanceBits === Number.NEGATIVE_INFINITY) return '-inf';
  return distanceBits.toFixed(3);
}

/** Aligned text table, one line per window (numbered from 1), values to three decimals; quiet rows say so. */
export function formatEntropyTable(rows: readonly WindowEntropy[]): string {
  const header = ['window', 'Pn', 'Pa', 'H(Pn)', 'H(Pa)', 'D', 'S'];
  const body = rows.map((row, i) => [
    String(i + 1),
    String(row.normal),
    String(row.abnormal),
    row.hNormal.toFixed(3),
    row.hAbnormal.toFixed(3),
    formatDistance(row.distance),
    String(row.status),
  ]);
  const table = [header, ...body];
  const widths = header.map((_, column) => Math.max(...table.map((cells) => cells[column]!.length)));
  const lines = table.map((cells, line) => {
    const aligned = cells.map((cell, column) => cell.padStart(widths[column]!)).join('  ');
    // The quiet note trails the S column so the table stays aligned and still shows why S is 1.
    return line > 0 && rows[line - 1]!.reason === 'quiet' ? `${aligned} (quiet)` : aligned;
  });
  return `${lines.join('\n')}\n`;
}

export function toJsonRow(row: WindowEntropy): EntropyJsonRow {
  return {
    normal: row.normal,
    abnormal: row.abnormal,
    hNormal: row.hNormal,
    hAbnormal: row.hAbnormal,
    distance: distanceForJson(row.distance),
    status: row.status,
  };
}

export function runEntropyCommand(opts: EntropyCommandOptions): EntropyCommandResult {
  try {
    const normals = parseCounts('--normal', opts.normal);
    const abnormals = parseCounts('--abnormal', opts.abnormal);
    if (normals.length !== abnormals.length) {
      throw new UsageError(
        `--normal has ${normals.length} windows but --abnormal has ${abnormals.length}; give one count per window in each`,
      );
    }
    const deltaBits = checkOption('--delta', opts.deltaBits ?? COMMAND_DEFAULT_DELTA_BITS, false);
    const minPairs = checkOption('--min-pairs', opts.minPairs ?? COMMAND_DEFAULT_MIN_PAIRS, true);
    const rows = normals.map((normal, i) => windowEntropy({ normal, abnormal: abnormals[i]! }, { deltaBits, minPairs }));
    const output = opts.json ? `${JSON.stringify(rows.map(toJsonRow), null, 2)}\n` : formatEntropyTable(rows);
    return { output, exitCode: 0 };
  } catch (error) {
    if (error instanceof UsageError) return { output: `error: ${error.message}\n`, exitCode: USAGE_EXIT_CODE };
    throw error;
  }
}
