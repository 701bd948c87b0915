import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_SPOOL_DIR, isPermissionFailure, spoolDirCandidates } from '../../src/quarantine/spool-layout.js';

describe('where the quarantine spool lives', () => {
  it('uses only the directory the operator named, never a fallback', () => {
    expect(spoolDirCandidates('/srv/spool', { HOME: '/home/op' }, 1000)).toEqual(['/srv/spool']);
  });

  it('tries the system spool first, then the user state directory, then the temporary directory', () => {
    expect(spoolDirCandidates(undefined, { HOME: '/home/op' }, 1000)).toEqual([
      DEFAULT_SPOOL_DIR,
      '/home/op/.local/state/smtp-pushback/spool',
      join(tmpdir(), 'smtp-pushback-1000', 'spool'),
    ]);
    expect(spoolDirCandidates(undefined, { HOME: '/home/op', XDG_STATE_HOME: '/xdg' }, 7)[1]).toBe('/xdg/smtp-pushback/spool');
  });

  it('ignores relative or missing HOME and XDG_STATE_HOME', () => {
    expect(spoolDirCandidates(undefined, { XDG_STATE_HOME: 'rel', HOME: 'also-rel' }, 5)).toEqual([DEFAULT_SPOOL_DIR, join(tmpdir(), 'smtp-pushback-5', 'spool')]);
  });

  it('falls through only on permission failures', () => {
    expect(isPermissionFailure(Object.assign(new Error('x'), { code: 'EACCES' }))).toBe(true);
    expect(isPermissionFailure(Object.assign(new Error('x'), { code: 'EROFS' }))).toBe(true);
    expect(isPermissionFailure(Object.assign(new Error('held'), { code: 'ELOCKED' }))).toBe(false);
    expect(isPermissionFailure(new Error('no code'))).toBe(false);
  });
});
