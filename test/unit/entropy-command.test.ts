// The entropy command: parsing of the comma lists, the aligned table, the JSON shape and usage errors.
import { describe, expect, it } from 'vitest';
import { formatEntropyTable, runEntropyCommand, USAGE_EXIT_CODE } from '../../src/cli/entropy-command.js';
import { paperLog2, windowEntropy } from '../../src/detect/entropy.js';

const paper = {
  normal: '100,95,87,85,76,67,51,32,22,19',
  abnormal: '0,5,13,15,24,33,49,68,78,81',
};

describe('runEntropyCommand', () => {
  it('prints the paper example as an aligned table', () => {
    const { output, exitCode } = runEntropyCommand(paper);
    expect(exitCode).toBe(0);
    const lines = output.trimEnd().split('\n');
    expect(lines).toHaveLength(11);
    expect(lines[0]!.trim().split(/\s+/)).toEqual(['window', 'Pn', 'Pa', 'H(Pn)', 'H(Pa)', 'D', 'S']);
    expect(lines[1]!.trim().split(/\s+/)).toEqual(['1', '100', '0', '0.000', '0.000', '+inf', '1']);
    expect(lines[2]!.trim().split(/\s+/)).toEqual(['2', '95', '5', '0.074', '4.322', '4.248', '1']);
    expect(lines[7]!.trim().split(/\s+/)).toEqual(['7', '51', '49', '0.972', '1.029', '0.058', '0']);
    expect(lines[10]!.trim().split(/\s+/)).toEqual(['10', '19', '81', '2.396', '0.304', '-2.092', '-1']);
    const statuses = lines.slice(1).map((line) => line.trim().split(/\s+/).at(-1));
    expect(statuses).toEqual(['1', '1', '1', '1', '1', '1', '0', '-1', '-1', '-1']);
    // Aligned: right-aligned columns make every line of the table the same length.
    expect(new Set(lines.map((line) => line.length)).size).toBe(1);
    expect(lines[1]!.indexOf('+inf') + 4).toBe(lines[10]!.indexOf('-2.092') + 6);
  });

  it('prints JSON with exactly the documented fields and null for an infinite distance', () => {
    const { output, exitCode } = runEntropyCommand({ ...paper, json: true });
    expect(exitCode).toBe(0);
    const rows = JSON.parse(output) as Array<Record<string, unknown>>;
    expect(rows).toHaveLength(10);
    for (const row of rows) {
      expect(Object.keys(row).sort()).toEqual(['abnormal', 'distance', 'hAbnormal', 'hNormal', 'normal', 'status']);
    }
    expect(rows[0]).toEqual({ normal: 100, abnormal: 0, hNormal: 0, hAbnormal: 0, distance: null, status: 1 });
    expect(rows[7]!.status).toBe(-1);
    expect(rows[7]!.distance as number).toBeCloseTo(paperLog2(32 / 68), 12);
    expect(rows.map((row) => row.status)).toEqual([1, 1, 1, 1, 1, 1, 0, -1, -1, -1]);
  });

  it('defaults minPairs to 0 so small operator windows are judged, and honours --min-pairs', () => {
    const small = { normal: '2', abnormal: '8', json: true };
    expect(JSON.parse(runEntropyCommand(small).output)[0].status).toBe(-1);
    expect(JSON.parse(runEntropyCommand({ ...small, minPairs: 20 }).output)[0].status).toBe(1);
    const table = runEntropyCommand({ normal: '2', abnormal: '8', minPairs: 20 }).output;
    expect(table).toContain('1 (quiet)');
  });

  it('honours --delta', () => {
    const window7 = { normal: '51', abnormal: '49', json: true };
    expect(JSON.parse(runEntropyCommand(window7).output)[0].status).toBe(0);
    expect(JSON.parse(runEntropyCommand({ ...window7, deltaBits: 0 }).output)[0].status).toBe(1);
  });

  it('accepts spaces around the counts', () => {
    const { output, exitCode } = runEntropyCommand({ normal: ' 3, 4 ', abnormal: '1 ,0', json: true });
    expect(exitCode).toBe(0);
    expect(JSON.parse(output).map((row: { normal: number }) => row.normal)).toEqual([3, 4]);
  });

  it.each([
    [{ normal: '1,2', abnormal: '1' }, /2 windows but --abnormal has 1/],
    [{ normal: '', abnormal: '' }, /--normal must be a comma-separated list/],
    [{ normal: '1,,2', abnormal: '1,2,3' }, /--normal must be a comma-separated list/],
    [{ normal: '1,x', abnormal: '1,2' }, /"x" is not a whole number/],
    [{ normal: '1,-2', abnormal: '1,2' }, /"-2" is not a whole number/],
    [{ normal: '1.5', abnormal: '1' }, /"1.5" is not a whole number/],
    [{ normal: '1', abnormal: '99999999999999999999' }, /too large/],
    [{ normal: '1', abnormal: '1', deltaBits: -1 }, /--delta must be a number >= 0/],
    [{ normal: '1', abnormal: '1', deltaBits: Number.NaN }, /--delta/],
    [{ normal: '1', abnormal: '1', minPairs: 2.5 }, /--min-pairs must be a whole number/],
  ])('rejects %o with exit code 2', (opts, message) => {
    const { output, exitCode } = runEntropyCommand(opts);
    expect(exitCode).toBe(USAGE_EXIT_CODE);
    expect(USAGE_EXIT_CODE).toBe(2);
    expect(output).toMatch(/^error: /);
    expect(output).toMatch(message);
  });
});

describe('formatEntropyTable', () => {
  it('shows -inf for a window with no normal pairs and marks empty windows quiet', () => {
    const table = formatEntropyTable([
      windowEntropy({ normal: 0, abnormal: 30 }),
      windowEntropy({ normal: 0, abnormal: 0 }),
    ]);
    const [, first, second] = table.trimEnd().split('\n');
    expect(first!.trim().split(/\s+/)).toEqual(['1', '0', '30', '0.000', '0.000', '-inf', '-1']);
    expect(second!.trim().split(/\s+/)).toEqual(['2', '0', '0', '0.000', '0.000', '0.000', '1', '(quiet)']);
  });

  it('prints only the header for no windows', () => {
    expect(formatEntropyTable([])).toBe('window  Pn  Pa  H(Pn)  H(Pa)  D  S\n');
  });

  it('right-aligns the status so 1 and -1 share their last column', () => {
    const table = formatEntropyTable([windowEntropy({ normal: 90, abnormal: 10 }), windowEntropy({ normal: 10, abnormal: 90 })]);
    const [header, safe, danger] = table.trimEnd().split('\n');
    expect(safe!.endsWith(' 1')).toBe(true);
    expect(danger!.endsWith('-1')).toBe(true);
    expect(safe!.length).toBe(danger!.length);
    expect(header!.length).toBe(safe!.length);
  });
});
