// What QuarantineSpool.open() does before it serves: remove what a crash left half-done and load the index.
// Safe only under the spool lock (nothing else is writing). Outcomes per name:
//   tmp/*                          removed (a write or rewrite that never reached its rename)
//   msg/<id> without meta/<id>     removed (killed between the two renames; the sender never got 250)
//   meta/<id> without msg/<id>     removed (impossible with our fsync order unless the disk lost data)
//   meta/<id> unreadable, or its sizeBytes differs from the message file: reported as damaged, left on disk
import { readdir, readFile, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { mapLimited, removeIfPresent } from './durable-fs.js';
import { parseEntryMeta, type EntryMeta } from './spool-entry.js';
import { idsIn, type SpoolLayout } from './spool-layout.js';

/** What open() found and repaired; worth a log line when anything is non-empty. */
export interface SpoolOpenReport {
  tempFilesRemoved: number;
  /** Message files without metadata: a crash between the two renames (the sender got no 250). */
  orphanMessagesRemoved: string[];
  /** Metadata without a message file: cannot happen with our fsync order unless the disk lost data. */
  orphanMetadataRemoved: string[];
  /** Metadata that does not parse, or whose message size differs: left on disk for the operator, not indexed. */
  damaged: string[];
  /** Entries found in state 'releasing': the process died during a release attempt. The scheduler decides. */
  interruptedReleases: string[];
}

export interface RecoveredSpool {
  /** In id order. */
  entries: EntryMeta[];
  report: SpoolOpenReport;
}

/** Reading a large spool at start: enough parallel reads to be quick, few enough to stay far from EMFILE. */
const LOAD_CONCURRENCY = 32;

export async function recoverSpool(layout: SpoolLayout, dirs: { msgDir: FileHandle; metaDir: FileHandle }): Promise<RecoveredSpool> {
  const report: SpoolOpenReport = {
    tempFilesRemoved: 0, orphanMessagesRemoved: [], orphanMetadataRemoved: [], damaged: [], interruptedReleases: [],
  };
  for (const name of await readdir(layout.tmpDir)) {
    await rm(join(layout.tmpDir, name), { force: true, recursive: true });
    report.tempFilesRemoved += 1;
  }
  const messageIds = new Set(idsIn(await readdir(layout.msgDir), '.eml'));
  const metaIds = idsIn(await readdir(layout.metaDir), '.json').sort();
  const loaded = await mapLimited(metaIds, LOAD_CONCURRENCY, (id) => loadEntry(layout, id, messageIds.has(id)));
  const entries: EntryMeta[] = [];
  for (const [position, id] of metaIds.entries()) {
    const outcome = loaded[position];
    messageIds.delete(id);
    if (outcome === 'orphan') report.orphanMetadataRemoved.push(id);
    else if (outcome === 'damaged') report.damaged.push(id);
    else if (outcome) {
      entries.push(outcome);
      if (outcome.state === 'releasing') report.interruptedReleases.push(id);
    }
  }
  for (const id of [...messageIds].sort()) {
    await removeIfPresent(layout.messageFile(id));
    report.orphanMessagesRemoved.push(id);
  }
  if (report.orphanMetadataRemoved.length > 0) await dirs.metaDir.sync();
  if (report.orphanMessagesRemoved.length > 0) await dirs.msgDir.sync();
  return { entries, report };
}

async function loadEntry(layout: SpoolLayout, id: string, hasMessage: boolean): Promise<EntryMeta | 'orphan' | 'damaged'> {
  if (!hasMessage) {
    await removeIfPresent(layout.metaFile(id));
    return 'orphan';
  }
  try {
    const meta = parseEntryMeta(await readFile(layout.metaFile(id), 'utf8'));
    const { size } = await stat(layout.messageFile(id));
    return meta.id === id && size === meta.sizeBytes ? meta : 'damaged';
  } catch {
    return 'damaged';
  }
}
