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

export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const file = path.join(dataDir, 'thicket.pid');
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await writeFile(file, `${process.pid}\n`, { flag: 'wx' });
      return async () => {
        await unlink(file).catch(() => {});
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      if (pid && pid !== process.pid && alive(pid)) {
        throw new Error(`another Thicket process (pid ${pid}) is using the data directory ${dataDir}`);
      }
      await unlink(file).catch(() => {});
    }
  }
  throw new Error(`cannot lock the data directory ${dataDir}`);
}
