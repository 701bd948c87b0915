// The few file-system moves the quarantine spool builds on: write a whole buffer, fsync a directory, write a
// small file durably, remove a file that may already be gone. Disk calls carry no timeout of their own (a
// FileHandle call cannot be cancelled); a hung disk hangs the caller, whose own deadline (the SMTP DATA reply
// timeout, the release tick) decides the outcome. Errors other than "already gone" are thrown unchanged.
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';

export const FILE_MODE = 0o640;
export const DIR_MODE = 0o750;

/** FileHandle.write may write less than asked; loop until the whole buffer is on its way to the disk. */
export async function writeAll(handle: FileHandle, buffer: Buffer): Promise<void> {
  let offset = 0;
  while (offset < buffer.length) {
    const { bytesWritten } = await handle.write(buffer, offset, buffer.length - offset);
    offset += bytesWritten;
  }
}

/**
 * Writes data to tempPath (which must not exist), fdatasyncs it, closes it and renames it to finalPath.
 * The caller fsyncs finalPath's directory: several renames can share one directory fsync.
 */
export async function writeFileDurably(tempPath: string, finalPath: string, data: Buffer): Promise<void> {
  const handle = await open(tempPath, 'wx', FILE_MODE);
  try {
    await writeAll(handle, data);
    await handle.datasync();
  } catch (error) {
    await handle.close().catch(() => undefined);
    await removeIfPresent(tempPath);
    throw error;
  }
  await handle.close();
  await rename(tempPath, finalPath);
}

/** unlink that treats "already gone" as done, so cleanup after a failure can run more than once. */
export async function removeIfPresent(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

/** Runs fn over items with at most `concurrency` in flight (loading a large spool at start without EMFILE). */
export async function mapLimited<T, R>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next;
      next += 1;
      results[index] = await fn(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return results;
}
