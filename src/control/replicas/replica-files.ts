// File operations on replica images shared by promotion, verification and moves.
import { chmod, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { close, fdatasync, fsyncDir, open } from '../../engine/fs-callbacks.ts';
import { replicaImagePath, replicaPartialPath, replicaSidecarPath } from '../../engine/storage-pool-fs.ts';

export async function removeReplicaFiles(poolPath: string, replicaId: string): Promise<void> {
  for (const file of [replicaPartialPath(poolPath, replicaId), replicaImagePath(poolPath, replicaId), replicaSidecarPath(poolPath, replicaId)]) {
    await chmod(file, 0o644).catch(() => {});
    await unlink(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}

/**
 * Turns a complete, verified partial file into the replica: read-only mode, a sidecar describing it,
 * then an atomic rename, each made durable before the next.
 */
export async function sealReplica(poolPath: string, replicaId: string, sidecar: Record<string, unknown>): Promise<void> {
  const partial = replicaPartialPath(poolPath, replicaId);
  await chmod(partial, 0o444);
  const sidecarPath = replicaSidecarPath(poolPath, replicaId);
  await writeFile(sidecarPath, JSON.stringify(sidecar, null, 2) + '\n');
  const fd = await open(sidecarPath, 'r');
  try {
    await fdatasync(fd);
  } finally {
    await close(fd);
  }
  await rename(partial, replicaImagePath(poolPath, replicaId));
  await fsyncDir(path.dirname(partial));
}
