// Where the quarantine spool keeps things. Under the spool directory:
//   tmp/<id>.eml, tmp/<id>.json, tmp/<id>.<hex>.json   writes in progress; anything here at open is a crash's leftover
//   msg/<id>.eml                                       our Received header + the message as received (unstuffed)
//   meta/<id>.json                                     the EntryMeta record, one JSON line
//   spool.lock                                         the owning process's pid
// An entry exists exactly when meta/<id>.json does. Ids are safe file names (see spool-entry.ts).
import { join } from 'node:path';
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
