// Builds the web UI (web/ → web/dist) when any source is newer than the last build, so `npm start` on a
// fresh clone serves a current UI without a separate step. `--force` always builds.
import { readdir, stat } from 'node:fs/promises';
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
  let newest = await newestMtime(WEB, new Set([path.join(WEB, 'dist'), path.join(WEB, 'node_modules')]));
  for (const f of SHARED) newest = Math.max(newest, await stat(f).then((s) => s.mtimeMs, () => 0));
  return newest > built;
}

export async function buildWeb(options: { force?: boolean; quiet?: boolean } = {}): Promise<boolean> {
  if (!options.force && !(await isStale())) return false;
  const { build } = await import('vite');
  await build({ configFile: path.join(WEB, 'vite.config.ts'), logLevel: options.quiet ? 'warn' : 'info' });
  return true;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const built = await buildWeb({ force: process.argv.includes('--force') });
  if (!built) console.log('web UI is up to date (web/dist)');
}
