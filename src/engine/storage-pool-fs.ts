// A storage pool on disk: a directory with replicas/ and clones/ below it, and the statfs of its device.
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, stat, statfs, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomUUID } from 'node:crypto';

export interface PoolCapacity {
  capacityBytes: number;
  freeBytes: number;
  usedBytes: number;
}

export function replicasDir(poolPath: string): string {
  return path.join(poolPath, 'replicas');
}

export function clonesDir(poolPath: string): string {
  return path.join(poolPath, 'clones');
}

export function replicaImagePath(poolPath: string, replicaId: string): string {
  return path.join(replicasDir(poolPath), `${replicaId}.img`);
}

/** Where a replica is written before it is complete; renamed to replicaImagePath when verified. */
export function replicaPartialPath(poolPath: string, replicaId: string): string {
  return path.join(replicasDir(poolPath), `${replicaId}.img.partial`);
}

export function replicaSidecarPath(poolPath: string, replicaId: string): string {
  return path.join(replicasDir(poolPath), `${replicaId}.json`);
}

/** Checks that `poolPath` is an existing, writable directory; returns the reason when it is not. */
export async function checkPoolPath(poolPath: string): Promise<string | undefined> {
  if (!path.isAbsolute(poolPath)) return 'path must be absolute';
  let info;
  try {
    info = await stat(poolPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'path does not exist' : `path cannot be read (${code})`;
  }
  if (!info.isDirectory()) return 'path is not a directory';
  try {
    await access(poolPath, fsConstants.W_OK | fsConstants.X_OK);
    // access() trusts mode bits; a read-only mount only shows on an actual write.
    const probe = path.join(poolPath, `.thicket-probe-${randomUUID()}`);
    await writeFile(probe, '');
    await unlink(probe);
  } catch (err) {
    return `path is not writable (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  return undefined;
}

export async function preparePoolDirectories(poolPath: string): Promise<void> {
  await mkdir(replicasDir(poolPath), { recursive: true });
  await mkdir(clonesDir(poolPath), { recursive: true });
}

export async function poolCapacity(poolPath: string): Promise<PoolCapacity> {
  const s = await statfs(poolPath);
  const capacityBytes = s.blocks * s.bsize;
  const freeBytes = s.bavail * s.bsize;
  const usedBytes = (s.blocks - s.bfree) * s.bsize;
  return { capacityBytes, freeBytes, usedBytes };
}

/** Bytes a file really occupies on its device (sparse files count only written blocks). */
export async function allocatedBytes(filePath: string): Promise<number> {
  try {
    const s = await stat(filePath);
    return s.blocks * 512;
  } catch {
    return 0;
  }
}
