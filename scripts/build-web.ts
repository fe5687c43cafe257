// Builds the web UI (web/ → web/dist) when any source is newer than the last build, so `npm start` on a
// fresh clone serves a current UI without a separate step. `--force` always builds.
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WEB = path.join(ROOT, 'web');
const OUTPUT = path.join(WEB, 'dist', 'index.html');
// The UI imports the desktop-name rules from the server so both agree.
const SHARED = [path.join(ROOT, 'src/control/desktop-pools/name-pattern.ts'), path.join(ROOT, 'src/errors.ts'), path.join(ROOT, 'package-lock.json')];

async function newestMtime(dir: string, skip: Set<string>): Promise<number> {
  let newest = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (skip.has(full)) continue;
    if (entry.isDirectory()) newest = Math.max(newest, await newestMtime(full, skip));
    else newest = Math.max(newest, (await stat(full)).mtimeMs);
  }
  return newest;
}

async function isStale(): Promise<boolean> {
  const built = await stat(OUTPUT).then((s) => s.mtimeMs, () => 0);
  if (!built) return true;
  let newest = await newestMtime(WEB, new Set([path.join(WEB, 'dist'), path.join(WEB, 'node_modules'), LOCK]));
  for (const f of SHARED) newest = Math.max(newest, await stat(f).then((s) => s.mtimeMs, () => 0));
  return newest > built;
}

const LOCK = path.join(WEB, '.build.lock');
const LOCK_STALE_MS = 120_000;

/**
 * Several processes may start at once (test workers, a second node): one builds, the others wait for it
 * and then find the output fresh. A lock left by a killed build is taken over after LOCK_STALE_MS.
 */
async function withBuildLock<T>(fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_STALE_MS + 10_000;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    try {
      await writeFile(LOCK, String(process.pid), { flag: 'wx' });
      try {
        return await fn();
      } finally {
        await rm(LOCK, { force: true });
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = await stat(LOCK).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (age > LOCK_STALE_MS) await rm(LOCK, { force: true });
      else await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`timed out waiting for another web UI build (${LOCK})`);
}

export async function buildWeb(options: { force?: boolean; quiet?: boolean } = {}): Promise<boolean> {
  if (!options.force && !(await isStale())) return false;
  return withBuildLock(async () => {
    // Another process may have built it while this one waited for the lock.
    if (!options.force && !(await isStale())) return false;
    const { build } = await import('vite');
    await build({ configFile: path.join(WEB, 'vite.config.ts'), logLevel: options.quiet ? 'warn' : 'info' });
    return true;
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const built = await buildWeb({ force: process.argv.includes('--force') });
  if (!built) console.log('web UI is up to date (web/dist)');
}
