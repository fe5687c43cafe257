// Clones as operators see them: a database row (name, parent replica, pool, QoS) plus the engine's live
// figures. The row is written first, then the engine is told; deletion goes the other way round, so a
// crash in between leaves at worst an engine clone with no row, which the next start removes.
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { DataplaneClient } from '../../dataplane/client.ts';
import type { CloneInfo } from '../../engine/engine.ts';
import { replicaImagePath } from '../../engine/storage-pool-fs.ts';
import { BLOCK_SIZE_BYTES } from '../../engine/block-size.ts';
import type { CloneRow, Database } from '../../db/schema.ts';
import { CloneRepository, type NewClone } from '../../db/repositories/clone.repository.ts';
import { isForeignKeyViolation, isUniqueViolation } from '../../db/repositories/executor.ts';
import { ReplicaRepository } from '../../db/repositories/replica.repository.ts';
import { StoragePoolRepository } from '../../db/repositories/storage-pool.repository.ts';
import { AppError } from '../../errors.ts';
import type { EventBus } from '../events/event-bus.ts';

export interface QosDto {
  iops: number | null;
  bytesPerSecond: number | null;
}

export interface CloneDto {
  id: string;
  name: string;
  replicaId: string;
  storagePoolId: string;
  sizeBytes: number;
  state: string;
  uniqueBytes: number;
  sharedBytes: number;
  qos: QosDto;
  error: string | null;
  createdAt: string;
}

export interface CreateCloneRequest {
  replicaId: string;
  storagePoolId: string;
  name: string;
  sizeBytes?: number;
  qos?: { iops?: number | null; bytesPerSecond?: number | null };
}

function toDto(row: CloneRow, live: CloneInfo | undefined): CloneDto {
  return {
    id: row.id,
    name: row.name,
    replicaId: row.replica_id,
    storagePoolId: row.storage_pool_id,
    sizeBytes: Number(row.size_bytes),
    state: live?.failed ? 'failed' : row.state,
    uniqueBytes: live ? live.uniqueBytes : Number(row.unique_bytes),
    sharedBytes: live ? live.sharedBytes : 0,
    qos: { iops: row.qos_iops, bytesPerSecond: row.qos_bytes_per_second === null ? null : Number(row.qos_bytes_per_second) },
    error: live?.failed ?? row.error,
    createdAt: new Date(row.created_at).toISOString(),
  };
}

export class CloneService {
  #db: Kysely<Database>;
  #events: EventBus;
  #dataplane: DataplaneClient;
  #clones = new CloneRepository();
  #replicas = new ReplicaRepository();
  #pools = new StoragePoolRepository();

  constructor(db: Kysely<Database>, events: EventBus, dataplane: DataplaneClient) {
    this.#db = db;
    this.#events = events;
    this.#dataplane = dataplane;
  }

  async #live(ids?: string[]): Promise<Map<string, CloneInfo>> {
    const infos = await this.#dataplane.call('cloneInfo', { ids });
    return new Map(infos.map((i) => [i.id, i]));
  }

  async list(filter: { replicaId?: string; storagePoolId?: string } = {}): Promise<CloneDto[]> {
    const rows = await this.#clones.list(this.#db, filter);
    const live = await this.#live(rows.length < 1000 ? rows.map((r) => r.id) : undefined);
    return rows.map((r) => toDto(r, live.get(r.id)));
  }

  async get(id: string): Promise<CloneDto> {
    const row = await this.#clones.get(this.#db, id);
    if (!row) throw new AppError('CLONE_NOT_FOUND', `clone ${id} does not exist`);
    const live = await this.#live([id]);
    return toDto(row, live.get(id));
  }

  /** Creates clones in one transaction and one engine call; used by the API and by pool provisioning. */
  async createMany(requests: CreateCloneRequest[]): Promise<CloneDto[]> {
    if (requests.length === 0) return [];
    let engineIds: string[] = [];
    const prepared = await this.#db.transaction().execute(async (trx) => {
      const replicaIds = [...new Set(requests.map((r) => r.replicaId))];
      const poolIds = [...new Set(requests.map((r) => r.storagePoolId))];
      const replicas = new Map<string, { id: string; size: number; path: string }>();
      for (const id of replicaIds) {
        const replica = await this.#replicas.get(trx, id);
        if (!replica) throw new AppError('REPLICA_NOT_FOUND', `replica ${id} does not exist`, { field: 'replicaId' });
        if (replica.state !== 'ready') throw new AppError('REPLICA_NOT_READY', `replica ${id} is ${replica.state}; clones need a ready replica`);
        const rpool = await this.#pools.get(trx, replica.storage_pool_id);
        replicas.set(id, { id, size: Number(replica.size_bytes), path: replicaImagePath(rpool!.path, id) });
      }
      for (const id of poolIds) {
        if (!(await this.#pools.get(trx, id))) throw new AppError('STORAGE_POOL_NOT_FOUND', `storage pool ${id} does not exist`, { field: 'storagePoolId' });
      }
      const rows: NewClone[] = requests.map((r) => {
        const replica = replicas.get(r.replicaId)!;
        const size = r.sizeBytes ?? replica.size;
        if (size < replica.size) throw new AppError('VALIDATION_FAILED', `sizeBytes: must be at least the replica's size (${replica.size})`, { field: 'sizeBytes' });
        if (size % BLOCK_SIZE_BYTES !== 0) throw new AppError('VALIDATION_FAILED', `sizeBytes: must be a multiple of ${BLOCK_SIZE_BYTES}`, { field: 'sizeBytes' });
        return {
          id: randomUUID(),
          name: r.name,
          replica_id: r.replicaId,
          storage_pool_id: r.storagePoolId,
          size_bytes: size,
          state: 'ready',
          qos_iops: r.qos?.iops ?? null,
          qos_bytes_per_second: r.qos?.bytesPerSecond ?? null,
        };
      });
      try {
        await this.#clones.insertMany(trx, rows);
      } catch (err) {
        if (isUniqueViolation(err)) throw new AppError('NAME_TAKEN', 'a clone with that name already exists', { field: 'name' });
        throw err;
      }
      // The engine learns of the clones before the rows commit: if it refuses, nothing is committed;
      // if the commit fails, the engine's clones are removed again below.
      engineIds = rows.map((r) => r.id);
      await this.#dataplane.call('createClones', {
        clones: rows.map((row) => {
          const replica = replicas.get(row.replica_id)!;
          return {
            id: row.id,
            poolId: row.storage_pool_id,
            replica: { id: replica.id, path: replica.path, sizeBytes: replica.size },
            sizeBytes: row.size_bytes,
            qos: { iops: row.qos_iops, bytesPerSecond: row.qos_bytes_per_second },
          };
        }),
      });
      return rows;
    }).catch(async (err) => {
      for (const id of engineIds) await this.#dataplane.call('deleteClone', { id }).catch(() => {});
      throw err;
    });
    const ids = prepared.map((r) => r.id);
    const rows = await this.#db.selectFrom('clones').selectAll().where('id', 'in', ids).execute();
    const live = await this.#live(ids);
    const dtos = rows.map((r) => toDto(r, live.get(r.id)));
    if (dtos.length === 1) this.#events.emit('clone.created', { cloneId: dtos[0].id, name: dtos[0].name, replicaId: dtos[0].replicaId });
    else this.#events.emit('clone.created', { cloneIds: ids, count: ids.length });
    return dtos;
  }

  async create(request: CreateCloneRequest): Promise<CloneDto> {
    return (await this.createMany([request]))[0];
  }

  async setQos(id: string, qos: { iops?: number | null; bytesPerSecond?: number | null }): Promise<CloneDto> {
    const row = await this.#clones.get(this.#db, id);
    if (!row) throw new AppError('CLONE_NOT_FOUND', `clone ${id} does not exist`);
    const iops = qos.iops === undefined ? row.qos_iops : qos.iops;
    const bps = qos.bytesPerSecond === undefined ? (row.qos_bytes_per_second === null ? null : Number(row.qos_bytes_per_second)) : qos.bytesPerSecond;
    await this.#clones.setQos(this.#db, id, iops, bps);
    await this.#dataplane.call('setQos', { id, qos: { iops, bytesPerSecond: bps } });
    return this.get(id);
  }

  async reset(id: string): Promise<CloneDto> {
    const row = await this.#clones.get(this.#db, id);
    if (!row) throw new AppError('CLONE_NOT_FOUND', `clone ${id} does not exist`);
    await this.#dataplane.call('resetClone', { id });
    // A reset repairs a clone that failed at start-up.
    if (row.state === 'failed') await this.#clones.setState(this.#db, id, 'ready');
    this.#events.emit('clone.reset', { cloneId: id });
    return this.get(id);
  }

  async delete(id: string): Promise<void> {
    const exported = await this.#db.selectFrom('namespaces').select(['subsystem_id', 'nsid']).where('clone_id', '=', id).executeTakeFirst();
    if (exported) {
      throw new AppError('CLONE_EXPORTED', `clone ${id} is exported as namespace ${exported.nsid}; unexport it first`, { subsystemId: exported.subsystem_id, nsid: exported.nsid });
    }
    let deleted: boolean;
    try {
      deleted = await this.#clones.delete(this.#db, id);
    } catch (err) {
      if (isForeignKeyViolation(err)) throw new AppError('CLONE_EXPORTED', `clone ${id} is exported; unexport it first`);
      throw err;
    }
    if (!deleted) throw new AppError('CLONE_NOT_FOUND', `clone ${id} does not exist`);
    await this.#dataplane.call('deleteClone', { id });
    this.#events.emit('clone.deleted', { cloneId: id });
  }

  /** Opens every storage pool in the engine with its clones; clones found damaged are marked failed. */
  async openPools(): Promise<Array<{ poolId: string; failed: Array<{ id: string; reason: string }>; removedOrphans: string[] }>> {
    const reports = [];
    for (const pool of await this.#pools.list(this.#db)) reports.push(await this.openPool(pool.id));
    return reports;
  }

  async openPool(poolId: string) {
    const pool = await this.#pools.get(this.#db, poolId);
    if (!pool) throw new AppError('STORAGE_POOL_NOT_FOUND', `storage pool ${poolId} does not exist`);
    const clones = await this.#clones.listForEngine(this.#db, poolId);
    const report = await this.#dataplane.call('openPool', {
      pool: { id: pool.id, path: pool.path, capacityBytes: pool.capacity_bytes === null ? undefined : Number(pool.capacity_bytes) },
      clones: clones.map((c) => ({
        id: c.id,
        replica: { id: c.replica_id, path: replicaImagePath(c.replica_pool_path, c.replica_id), sizeBytes: Number(c.replica_size_bytes) },
        sizeBytes: Number(c.size_bytes),
        qos: { iops: c.qos_iops, bytesPerSecond: c.qos_bytes_per_second === null ? null : Number(c.qos_bytes_per_second) },
      })),
    });
    for (const f of report.failed) {
      await this.#clones.setState(this.#db, f.id, 'failed', f.reason);
      // A desktop on a clone that cannot be served is failed too (a broker must not hand it out); a
      // refresh gives it a working disk again.
      const desktops = await this.#db
        .updateTable('desktops')
        .set({ state: 'failed', error: `its clone failed at start-up: ${f.reason}`.slice(0, 8000) })
        .where('clone_id', '=', f.id)
        .where('state', '!=', 'failed')
        .returning(['pool_id', 'name', 'clone_id'])
        .execute();
      this.#events.emit('clone.failed', { cloneId: f.id, reason: f.reason });
      for (const d of desktops) this.#events.emit('desktop.state', { poolId: d.pool_id, desktops: [{ name: d.name, cloneId: d.clone_id, state: 'failed' }] });
    }
    return { poolId, failed: report.failed, removedOrphans: report.removedOrphans };
  }

  /** Copies the engine's unique-byte counts into the rows (for listings and pool usage in SQL). */
  async syncUsage(): Promise<void> {
    const infos = await this.#dataplane.call('cloneInfo', {});
    await this.#clones.setUniqueBytes(this.#db, infos.map((i) => ({ id: i.id, uniqueBytes: i.uniqueBytes })));
  }

  /** Shared bytes per replica: replica bytes its clones still read instead of owning. */
  async sharedBytesByReplica(): Promise<Map<string, number>> {
    const infos = await this.#dataplane.call('cloneInfo', {});
    const out = new Map<string, number>();
    for (const i of infos) out.set(i.replicaId, (out.get(i.replicaId) ?? 0) + i.sharedBytes);
    return out;
  }
}
