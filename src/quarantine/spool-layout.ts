// Where the quarantine spool keeps things. Under the spool directory:
//   tmp/<id>.eml, tmp/<id>.json, tmp/<id>.<hex>.json   writes in progress; anything here at open is a crash's leftover
//   msg/<id>.eml                                       our Received header + the message as received (unstuffed)
//   meta/<id>.json                                     the EntryMeta record, one JSON line
//   spool.lock                                         the owning process's pid
// An entry exists exactly when meta/<id>.json does. Ids are safe file names (see spool-entry.ts).
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { isEntryId } from './spool-entry.js';

export interface SpoolLayout {
  root: string;
  tmpDir: string;
  msgDir: string;
  metaDir: string;
  lockFile: string;
  messageFile(id: string): string;
  metaFile(id: string): string;
  tempMessageFile(id: string): string;
  /** suffix: '' for a new entry's record, random hex for a rewrite (two rewrites never share a temp name). */
  tempMetaFile(id: string, suffix?: string): string;
}

export function spoolLayout(root: string): SpoolLayout {
  const tmpDir = join(root, 'tmp');
  const msgDir = join(root, 'msg');
  const metaDir = join(root, 'meta');
  return {
    root,
    tmpDir,
    msgDir,
    metaDir,
    lockFile: join(root, 'spool.lock'),
    messageFile: (id) => join(msgDir, `${id}.eml`),
    metaFile: (id) => join(metaDir, `${id}.json`),
    tempMessageFile: (id) => join(tmpDir, `${id}.eml`),
    tempMetaFile: (id, suffix = '') => join(tmpDir, suffix ? `${id}.${suffix}.json` : `${id}.json`),
  };
}

/** Entry ids among a directory's names; anything else (an editor's backup, a stray file) is left alone. */
export function idsIn(names: readonly string[], extension: '.eml' | '.json'): string[] {
  return names.filter((name) => name.endsWith(extension)).map((name) => name.slice(0, -extension.length)).filter(isEntryId);
}

/** Where the spool lives when the policy names none: the system's spool, as the systemd unit and the image set up. */
export const DEFAULT_SPOOL_DIR = '/var/spool/smtp-pushback';

/**
 * The spool directories to try, in order. A directory the operator named is the only one: mail must not go
 * somewhere they did not choose. With none named, a user who cannot write the system's spool (a first
 * `npm start` as an ordinary user) gets a spool of their own, under $XDG_STATE_HOME (or ~/.local/state), else
 * under the temporary directory, so the first run quarantines as the policy says instead of deferring.
 */
export function spoolDirCandidates(configured: string | undefined, env: NodeJS.ProcessEnv, uid: number | undefined): string[] {
  if (configured !== undefined) return [configured];
  const candidates = [DEFAULT_SPOOL_DIR];
  const stateHome = env.XDG_STATE_HOME?.startsWith('/') ? env.XDG_STATE_HOME : env.HOME?.startsWith('/') ? join(env.HOME, '.local', 'state') : undefined;
  if (stateHome !== undefined) candidates.push(join(stateHome, 'smtp-pushback', 'spool'));
  candidates.push(join(tmpdir(), `smtp-pushback-${uid ?? 'user'}`, 'spool'));
  return candidates;
}

/** A spool directory this user may not create or write: the next candidate is tried. Any other failure is reported. */
export function isPermissionFailure(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'EACCES' || code === 'EPERM' || code === 'EROFS';
}
