// One process per spool directory. Opening a spool deletes half-written temp files, which would destroy a
// second process's writes in progress, so a lock file holds the owner's pid. A lock whose pid is gone (the
// owner was killed) is taken over. Pids are per host: do not share a spool directory across hosts or
// containers with separate pid namespaces.
import { open, readFile, unlink } from 'node:fs/promises';
import { FILE_MODE } from './durable-fs.js';

export class SpoolLockedError extends Error {
  constructor(
    readonly lockPath: string,
    readonly ownerPid: number,
  ) {
    super(`spool is in use by process ${ownerPid} (${lockPath})`);
    this.name = 'SpoolLockedError';
  }
}

export interface SpoolLock {
  release(): Promise<void>;
}

export async function acquireSpoolLock(lockPath: string): Promise<SpoolLock> {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      const handle = await open(lockPath, 'wx', FILE_MODE);
      try {
        await handle.writeFile(`${process.pid} ${PROCESS_STARTED_MS}\n`);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      return { release: () => unlink(lockPath).catch(() => undefined) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const [pidText, startedText] = (await readFile(lockPath, 'utf8').catch(() => '')).trim().split(/\s+/);
    const ownerPid = Number.parseInt(pidText ?? '', 10);
    // Our own pid written by another life of this process id (after kill -9 in a container, node is
    // pid 1 again) is stale; written by this very process, the spool is already open here.
    const earlierLifeOfOurPid = ownerPid === process.pid && Number(startedText) !== PROCESS_STARTED_MS;
    if (Number.isInteger(ownerPid) && ownerPid > 0 && !earlierLifeOfOurPid && processAlive(ownerPid)) throw new SpoolLockedError(lockPath, ownerPid);
    // Stale (owner gone, or the file is empty because the owner died while writing it): remove and retry once.
    await unlink(lockPath).catch(() => undefined);
  }
  throw new Error(`could not take the spool lock ${lockPath}: another process keeps recreating it`);
}

/** When this process started (ms since the epoch, rounded): tells our pid's lives apart. */
const PROCESS_STARTED_MS = Math.round(Date.now() - process.uptime() * 1000);

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
