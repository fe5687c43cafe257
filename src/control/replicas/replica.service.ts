// Replicas: read-only, checksummed copies of template versions on a storage pool. Promotion, verification
// and moves are jobs; this service validates requests and queues them.
import { randomUUID } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema.ts';
import { isForeignKeyViolation } from '../../db/repositories/executor.ts';
import { JobRepository } from '../../db/repositories/job.repository.ts';
import { ReplicaRepository } from '../../db/repositories/replica.repository.ts';
import { StoragePoolRepository } from '../../db/repositories/storage-pool.repository.ts';
import { TemplateRepository } from '../../db/repositories/template.repository.ts';
import { replicasDir } from '../../engine/storage-pool-fs.ts';
import { AppError } from '../../errors.ts';
import type { EventBus } from '../events/event-bus.ts';
import { toJobDto, type JobDto } from '../jobs/job-types.ts';
import { toReplicaDto, type ReplicaDto } from './replica-dto.ts';
import { removeReplicaFiles } from './replica-files.ts';
import { REPLICA_JOB_KINDS } from './replica-jobs.ts';

/** What replicas need from the block engine. */
export interface ReplicaEngine {
  sharedBytesByReplica(): Promise<Map<string, number>>;
  releaseReplica(replicaId: string): Promise<void>;
}

export class ReplicaService {
  #db: Kysely<Database>;
  #events: EventBus;
  #kick: () => void;
  #replicas = new ReplicaRepository();
  #pools = new StoragePoolRepository();
  #templates = new TemplateRepository();
  #jobs = new JobRepository();
  #engine: ReplicaEngine | undefined;

  constructor(db: Kysely<Database>, events: EventBus, kickJobs: () => void) {
    this.#db = db;
    this.#events = events;
    this.#kick = kickJobs;
  }

  attachEngine(engine: ReplicaEngine): void {
    this.#engine = engine;
  }

  async #shared(): Promise<Map<string, number>> {
    return this.#engine ? this.#engine.sharedBytesByReplica() : new Map();
  }

  async list(filter: { storagePoolId?: string; templateId?: string } = {}): Promise<ReplicaDto[]> {
    const shared = await this.#shared();
    return (await this.#replicas.list(this.#db, filter)).map((r) => ({ ...toReplicaDto(r), sharedBytes: shared.get(r.id) ?? 0 }));
  }

  async get(id: string): Promise<ReplicaDto> {
    const row = await this.#replicas.get(this.#db, id);
    if (!row) throw new AppError('REPLICA_NOT_FOUND', `replica ${id} does not exist`);
    return { ...toReplicaDto(row), sharedBytes: (await this.#shared()).get(id) ?? 0 };
  }

  /**
   * A pool with a configured capacity is a budget: a replica that would take its usage (replicas at their
   * size, clones at their unique bytes, as GET /storage-pools/:id counts them) past it is refused up front.
   * Pools without one are bounded by their device, which the copy itself runs into (507 from the job).
   */
  async #requireRoom(trx: Kysely<Database>, pool: { id: string; name: string; capacity_bytes: number | string | null }, bytes: number): Promise<void> {
    if (pool.capacity_bytes === null || pool.capacity_bytes === undefined) return;
    const capacity = Number(pool.capacity_bytes);
    const usage = await this.#pools.usage(trx, pool.id);
    const used = Number(usage.replicaBytes) + Number(usage.cloneBytes);
    if (used + bytes > capacity) {
      throw new AppError('INSUFFICIENT_SPACE', `storage pool "${pool.name}" has ${Math.max(0, capacity - used)} of its configured ${capacity} bytes free; the replica needs ${bytes}`, {
        field: 'storagePoolId',
        capacityBytes: capacity,
        usedBytes: used,
        neededBytes: bytes,
      });
    }
  }

  async promote(input: { templateVersionId: string; storagePoolId: string }): Promise<{ replica: ReplicaDto; job: JobDto }> {
    const { replica, job } = await this.#db.transaction().execute(async (trx) => {
      const version = await this.#templates.getVersion(trx, input.templateVersionId);
      if (!version) throw new AppError('TEMPLATE_VERSION_NOT_FOUND', `template version ${input.templateVersionId} does not exist`, { field: 'templateVersionId' });
      const template = await this.#templates.get(trx, version.template_id);
      if (!template) throw new AppError('TEMPLATE_VERSION_NOT_FOUND', `template version ${input.templateVersionId} does not exist`, { field: 'templateVersionId' });
      const pool = await this.#pools.get(trx, input.storagePoolId);
      if (!pool) throw new AppError('STORAGE_POOL_NOT_FOUND', `storage pool ${input.storagePoolId} does not exist`, { field: 'storagePoolId' });
      await this.#requireRoom(trx, pool, Number(version.size_bytes));
      const replicaId = randomUUID();
      const replica = await this.#replicas.insert(trx, {
        id: replicaId,
        template_version_id: version.id,
        template_id: template.id,
        template_name: template.name,
        version: version.version,
        storage_pool_id: pool.id,
        state: 'creating',
        size_bytes: Number(version.size_bytes),
        sha256: version.sha256,
      });
      const job = await this.#jobs.insert(trx, {
        id: randomUUID(),
        kind: REPLICA_JOB_KINDS.promote,
        resource_id: replicaId,
        payload: { replicaId, templateVersionId: version.id, storagePoolId: pool.id },
        progress_total: Number(version.size_bytes),
      });
      return { replica, job };
    });
    this.#events.emit('replica.created', { replicaId: replica.id, templateVersionId: replica.template_version_id, storagePoolId: replica.storage_pool_id, jobId: job.id });
    this.#events.emit('job.queued', { jobId: job.id, kind: job.kind, resourceId: replica.id });
    this.#kick();
    return { replica: toReplicaDto(replica), job: toJobDto(job) };
  }

  async verify(id: string): Promise<JobDto> {
    const job = await this.#db.transaction().execute(async (trx) => {
      const replica = await this.#lockIdle(trx, id);
      if (replica.state !== 'ready' && replica.state !== 'corrupt') {
        throw new AppError('REPLICA_NOT_READY', `replica ${id} is ${replica.state}; only ready or corrupt replicas can be verified`);
      }
      return this.#jobs.insert(trx, { id: randomUUID(), kind: REPLICA_JOB_KINDS.verify, resource_id: id, payload: { replicaId: id }, progress_total: Number(replica.size_bytes) });
    });
    this.#events.emit('job.queued', { jobId: job.id, kind: job.kind, resourceId: id });
    this.#kick();
    return toJobDto(job);
  }

  async move(id: string, input: { storagePoolId: string }): Promise<JobDto> {
    const job = await this.#db.transaction().execute(async (trx) => {
      const replica = await this.#lockIdle(trx, id);
      if (replica.state !== 'ready') throw new AppError('REPLICA_NOT_READY', `replica ${id} is ${replica.state}; only a ready replica can be moved`);
      const to = await this.#pools.get(trx, input.storagePoolId);
      if (!to) throw new AppError('STORAGE_POOL_NOT_FOUND', `storage pool ${input.storagePoolId} does not exist`, { field: 'storagePoolId' });
      if (to.id === replica.storage_pool_id) throw new AppError('CONFLICT', `replica ${id} is already on storage pool "${to.name}"`, { field: 'storagePoolId' });
      await this.#requireRoom(trx, to, Number(replica.size_bytes));
      return this.#jobs.insert(trx, {
        id: randomUUID(),
        kind: REPLICA_JOB_KINDS.move,
        resource_id: id,
        payload: { replicaId: id, fromStoragePoolId: replica.storage_pool_id, toStoragePoolId: to.id },
        progress_total: Number(replica.size_bytes),
      });
    });
    this.#events.emit('job.queued', { jobId: job.id, kind: job.kind, resourceId: id });
    this.#kick();
    return toJobDto(job);
  }

  async delete(id: string): Promise<void> {
    let poolPath: string | undefined;
    try {
      await this.#db.transaction().execute(async (trx) => {
        const replica = await this.#lockIdle(trx, id);
        const clones = await this.#replicas.clonesOf(trx, id);
        const desktopPools = await this.#replicas.desktopPoolsOf(trx, id);
        if (clones.length > 0 || desktopPools.length > 0) throw replicaInUse(id, clones, await this.#replicas.cloneCountOf(trx, id), desktopPools);
        poolPath = (await this.#pools.get(trx, replica.storage_pool_id))?.path;
        await this.#replicas.delete(trx, id);
      });
    } catch (err) {
      if (isForeignKeyViolation(err)) {
        throw replicaInUse(id, await this.#replicas.clonesOf(this.#db, id), await this.#replicas.cloneCountOf(this.#db, id), await this.#replicas.desktopPoolsOf(this.#db, id));
      }
      throw err;
    }
    await this.#engine?.releaseReplica(id);
    if (poolPath) await removeReplicaFiles(poolPath, id);
    this.#events.emit('replica.deleted', { replicaId: id });
  }

  /** Removes replica files that no row knows (or that belong to failed replicas) on every pool. */
  async sweepOrphans(): Promise<string[]> {
    const removed: string[] = [];
    for (const pool of await this.#pools.list(this.#db)) {
      const dir = replicasDir(pool.path);
      let files: string[];
      try {
        files = await readdir(dir);
      } catch {
        continue;
      }
      const rows = new Map((await this.#replicas.list(this.#db, { storagePoolId: pool.id })).map((r) => [r.id, r.state]));
      for (const file of files) {
        const m = /^([0-9a-f-]{36})\.(img|img\.partial|json)$/.exec(file);
        const id = m?.[1];
        const state = id ? rows.get(id) : undefined;
        const active = id ? (await this.#jobs.activeForResource(this.#db, id)).length > 0 : false;
        const orphan = !m || state === undefined || state === 'failed' || (m[2] === 'img.partial' && !active);
        if (!orphan) continue;
        if (id && m && m[2] !== 'img.partial') await removeReplicaFiles(pool.path, id);
        else await rm(path.join(dir, file), { force: true });
        removed.push(path.join(dir, file));
      }
    }
    return removed;
  }

  async #lockIdle(trx: Kysely<Database>, id: string) {
    const replica = await this.#replicas.getForUpdate(trx, id);
    if (!replica) throw new AppError('REPLICA_NOT_FOUND', `replica ${id} does not exist`);
    const active = await this.#jobs.activeForResource(trx, id);
    if (active.length > 0) {
      throw new AppError('REPLICA_BUSY', `replica ${id} has a ${active[0].kind} job in progress; wait for it or cancel it`, {
        jobs: active.map((j) => ({ id: j.id, kind: j.kind, state: j.state })),
      });
    }
    return replica;
  }
}

/**
 * The refusal names what holds the replica, so an operator knows what to delete or recompose first.
 * details.clones lists at most the first 1,000 clones by name; details.cloneCount counts them all.
 */
function replicaInUse(id: string, clones: Array<{ id: string; name: string }>, cloneCount: number, desktopPools: Array<{ id: string; name: string }>): AppError {
  const holders: string[] = [];
  if (desktopPools.length) holders.push(`desktop pool(s) ${desktopPools.map((p) => p.name).join(', ')}`);
  if (cloneCount) holders.push(`${cloneCount} clone(s)`);
  // details keeps the documented {clones} shape; desktopPools is added only when there are some.
  return new AppError('REPLICA_IN_USE', `replica ${id} is held by ${holders.join(' and ')}; delete or recompose them first`, desktopPools.length ? { clones, cloneCount, desktopPools } : { clones, cloneCount });
}
