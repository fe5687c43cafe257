// The embedded database can be opened by one process only: a second Thicket on the same data directory
// would corrupt it. A pid file guards the directory; a stale file left by a killed process is taken over.
import { readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid in the file; 0 when it is empty or unreadable as a pid, undefined when the file is gone. */
async function readPid(file: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(file, 'utf8')).trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const file = path.join(dataDir, 'thicket.pid');
  const content = `${process.pid}\n`;
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await writeFile(file, content, { flag: 'wx' });
      return async () => {
        // Only our own lock is removed: never a file another process has taken over meanwhile.
        const pid = await readPid(file).catch(() => undefined);
        if (pid === process.pid) await unlink(file).catch(() => {});
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let pid = await readPid(file);
      // Creating the file and writing the pid are two steps: an empty file is normally a process that is
      // starting right now. Only a file that stays empty (its writer died in between) is stale.
      for (let i = 0; i < 20 && pid === 0; i++) {
        await sleep(50);
        pid = await readPid(file);
      }
      if (pid === undefined) continue; // removed meanwhile: try again
      if (pid !== 0 && pid !== process.pid && alive(pid)) {
        throw new Error(`another Thicket process (pid ${pid}) is using the data directory ${dataDir}`);
      }
      await unlink(file).catch(() => {});
    }
  }
  throw new Error(`cannot lock the data directory ${dataDir}`);
}
