// Job handlers for replicas: promote (copy a template version to a pool), verify (re-hash) and move
// (copy to another pool, then switch). Each run can be repeated from the start after a crash.
import { unlink } from 'node:fs/promises';
import type { Kysely } from 'kysely';
import type { Database, JobRow } from '../../db/schema.ts';
import { ReplicaRepository } from '../../db/repositories/replica.repository.ts';
import { StoragePoolRepository } from '../../db/repositories/storage-pool.repository.ts';
import { TemplateRepository } from '../../db/repositories/template.repository.ts';
import { copySparse, CopyAbortedError, hashFile } from '../../engine/sparse-copy.ts';
import { replicaImagePath, replicaPartialPath } from '../../engine/storage-pool-fs.ts';
import type { EventBus } from '../events/event-bus.ts';
import { JobCancelledError, JobFailure, type JobContext, type JobHandler } from '../jobs/job-types.ts';
import { removeReplicaFiles, sealReplica } from './replica-files.ts';

export const REPLICA_JOB_KINDS = {
  promote: 'replica.promote',
  verify: 'replica.verify',
  move: 'replica.move',
} as const;

interface Deps {
  db: Kysely<Database>;
  events: EventBus;
  versionImagePath: (templateId: string, versionId: string) => string;
  /** Points the engine's open replica (and so every clone of it) at the new copy. */
  repointReplica?: (replicaId: string, path: string) => Promise<void>;
}

const replicas = new ReplicaRepository();
const pools = new StoragePoolRepository();
const templates = new TemplateRepository();

function rethrowCancel(err: unknown): never {
  if (err instanceof CopyAbortedError) throw new JobCancelledError();
  throw err;
}

export class PromoteReplicaJob implements JobHandler {
  readonly kind = REPLICA_JOB_KINDS.promote;
  #deps: Deps;
  constructor(deps: Deps) {
    this.#deps = deps;
  }

  async run(ctx: JobContext): Promise<void> {
    const { db, events } = this.#deps;
    const replicaId = ctx.job.resource_id!;
    const replica = await replicas.get(db, replicaId);
    if (!replica) throw new JobFailure('REPLICA_NOT_FOUND', `replica ${replicaId} no longer exists`);
    if (replica.state === 'ready') return; // a previous attempt finished just before a crash
    if (replica.state !== 'creating') throw new JobFailure('REPLICA_NOT_READY', `replica is ${replica.state}`);
    const pool = await pools.get(db, replica.storage_pool_id);
    if (!pool) throw new JobFailure('STORAGE_POOL_NOT_FOUND', 'the storage pool was removed');
    const version = await templates.getVersion(db, replica.template_version_id);
    if (!version) {
      throw new JobFailure('TEMPLATE_VERSION_NOT_FOUND', 'the template version was deleted before it could be promoted');
    }
    const source = this.#deps.versionImagePath(version.template_id, version.id);
    const partial = replicaPartialPath(pool.path, replicaId);
    await unlink(partial).catch(() => {}); // a previous attempt's leftovers: start over
    ctx.progress(0, Number(version.size_bytes), 'copying');
    const copied = await copySparse(source, partial, {
      signal: ctx.signal,
      onProgress: (done, total) => ctx.progress(done, total, 'copying'),
    }).catch(rethrowCancel);
    if (copied.sha256 !== version.sha256 || copied.sizeBytes !== Number(version.size_bytes)) {
      throw new JobFailure('CHECKSUM_MISMATCH', 'the copy does not match the template version checksum', {
        expected: version.sha256,
        actual: copied.sha256,
      });
    }
    ctx.throwIfCancelled();
    ctx.progress(copied.sizeBytes, copied.sizeBytes, 'sealing');
    await sealReplica(pool.path, replicaId, {
      id: replicaId,
      templateId: version.template_id,
      templateVersionId: version.id,
      version: version.version,
      sizeBytes: copied.sizeBytes,
      sha256: copied.sha256,
      createdAt: new Date().toISOString(),
    });
    await replicas.setState(db, replicaId, 'ready');
    ctx.result({ item: replicaId, status: 'succeeded' });
    events.emit('replica.ready', { replicaId, storagePoolId: pool.id, sizeBytes: copied.sizeBytes, sha256: copied.sha256 });
  }

  async rollback(job: JobRow, reason: { code: string; message: string }): Promise<void> {
    const { db, events } = this.#deps;
    const replicaId = job.resource_id!;
    const replica = await replicas.get(db, replicaId);
    if (!replica || replica.state !== 'creating') return;
    const pool = await pools.get(db, replica.storage_pool_id);
    if (pool) await removeReplicaFiles(pool.path, replicaId);
    await replicas.setState(db, replicaId, 'failed', `${reason.code}: ${reason.message}`);
    events.emit('replica.failed', { replicaId, error: reason });
  }
}

export class VerifyReplicaJob implements JobHandler {
  readonly kind = REPLICA_JOB_KINDS.verify;
  #deps: Deps;
  constructor(deps: Deps) {
    this.#deps = deps;
  }

  async run(ctx: JobContext): Promise<void> {
    const { db, events } = this.#deps;
    const replicaId = ctx.job.resource_id!;
    const replica = await replicas.get(db, replicaId);
    if (!replica) throw new JobFailure('REPLICA_NOT_FOUND', `replica ${replicaId} no longer exists`);
    const pool = await pools.get(db, replica.storage_pool_id);
    if (!pool) throw new JobFailure('STORAGE_POOL_NOT_FOUND', 'the storage pool was removed');
    ctx.progress(0, Number(replica.size_bytes), 'hashing');
    let actual: { sizeBytes: number; sha256: string } | undefined;
    let problem: string | undefined;
    try {
      actual = await hashFile(replicaImagePath(pool.path, replicaId), {
        signal: ctx.signal,
        onProgress: (done, total) => ctx.progress(done, total, 'hashing'),
      });
    } catch (err) {
      if (err instanceof CopyAbortedError) throw new JobCancelledError();
      problem = `cannot read the replica image: ${(err as Error).message}`;
    }
    if (!problem && actual && (actual.sha256 !== replica.sha256 || actual.sizeBytes !== Number(replica.size_bytes))) {
      problem = 'the replica image does not match its recorded sha256';
    }
    if (problem) {
      await replicas.setState(db, replicaId, 'corrupt', problem);
      const details = { expected: replica.sha256, actual: actual?.sha256 ?? null, expectedSizeBytes: Number(replica.size_bytes), actualSizeBytes: actual?.sizeBytes ?? null };
      events.emit('replica.corrupt', { replicaId, message: problem, ...details });
      ctx.result({ item: replicaId, status: 'failed', error: problem });
      throw new JobFailure('REPLICA_CORRUPT', problem, details);
    }
    if (replica.state === 'corrupt') await replicas.setState(db, replicaId, 'ready');
    ctx.result({ item: replicaId, status: 'succeeded' });
    events.emit('replica.verified', { replicaId, sha256: replica.sha256 });
  }

  async rollback(): Promise<void> {
    // Verification changes nothing but the replica's state, which run() sets itself.
  }
}

export class MoveReplicaJob implements JobHandler {
  readonly kind = REPLICA_JOB_KINDS.move;
  #deps: Deps;
  constructor(deps: Deps) {
    this.#deps = deps;
  }

  async run(ctx: JobContext): Promise<void> {
    const { db, events } = this.#deps;
    const replicaId = ctx.job.resource_id!;
    const fromPoolId = String(ctx.job.payload.fromStoragePoolId);
    const toPoolId = String(ctx.job.payload.toStoragePoolId);
    const replica = await replicas.get(db, replicaId);
    if (!replica) throw new JobFailure('REPLICA_NOT_FOUND', `replica ${replicaId} no longer exists`);
    const from = await pools.get(db, fromPoolId);
    const to = await pools.get(db, toPoolId);
    if (!to) throw new JobFailure('STORAGE_POOL_NOT_FOUND', 'the destination storage pool was removed');
    if (replica.storage_pool_id === toPoolId) {
      // The switch happened before a crash; only the old copy may be left to remove.
      if (from) await removeReplicaFiles(from.path, replicaId);
      return;
    }
    if (!from) throw new JobFailure('STORAGE_POOL_NOT_FOUND', 'the source storage pool was removed');
    const size = Number(replica.size_bytes);
    await removeReplicaFiles(to.path, replicaId);
    ctx.progress(0, size, 'copying');
    const copied = await copySparse(replicaImagePath(from.path, replicaId), replicaPartialPath(to.path, replicaId), {
      signal: ctx.signal,
      onProgress: (done, total) => ctx.progress(done, total, 'copying'),
    }).catch(rethrowCancel);
    if (copied.sha256 !== replica.sha256) {
      throw new JobFailure('CHECKSUM_MISMATCH', 'the copy does not match the replica checksum; the source may be corrupt', {
        expected: replica.sha256,
        actual: copied.sha256,
      });
    }
    ctx.throwIfCancelled();
    ctx.progress(size, size, 'switching');
    await sealReplica(to.path, replicaId, {
      id: replicaId,
      templateId: replica.template_id,
      templateVersionId: replica.template_version_id,
      version: replica.version,
      sizeBytes: size,
      sha256: replica.sha256,
      movedAt: new Date().toISOString(),
    });
    // Clones keep serving throughout: they read the old copy until this switch, the new one after it.
    await this.#deps.repointReplica?.(replicaId, replicaImagePath(to.path, replicaId));
    await replicas.setStoragePool(db, replicaId, toPoolId);
    await removeReplicaFiles(from.path, replicaId);
    ctx.result({ item: replicaId, status: 'succeeded' });
    events.emit('replica.moved', { replicaId, fromStoragePoolId: fromPoolId, toStoragePoolId: toPoolId });
  }

  async rollback(job: JobRow): Promise<void> {
    const { db } = this.#deps;
    const replica = await replicas.get(db, job.resource_id!);
    const to = await pools.get(db, String(job.payload.toStoragePoolId));
    // Only the destination copy is ours to remove, and only while the replica still lives at the source.
    if (replica && to && replica.storage_pool_id !== to.id) await removeReplicaFiles(to.path, replica.id);
  }
}
