// Storage pools: directories with a tier label. Policy only; SQL lives in the repository.
import { randomUUID } from 'node:crypto';
import { mkdir, realpath } from 'node:fs/promises';
import path from 'node:path';
import type { Kysely } from 'kysely';
import type { Database, StoragePoolRow } from '../../db/schema.ts';
import { StoragePoolRepository } from '../../db/repositories/storage-pool.repository.ts';
import { SettingsRepository } from '../../db/repositories/settings.repository.ts';
import { isUniqueViolation } from '../../db/repositories/executor.ts';
import { checkPoolPath, poolCapacity, preparePoolDirectories } from '../../engine/storage-pool-fs.ts';
import { AppError } from '../../errors.ts';
import type { EventBus } from '../events/event-bus.ts';
import type { StoragePoolDto } from '../../dto.ts';
export type { StoragePoolDto } from '../../dto.ts';

/** What the storage pool service needs from the block engine (the data plane). */
export interface PoolEngine {
  openPool(poolId: string): Promise<unknown>;
  closePool(poolId: string): Promise<void>;
  usage(): Promise<Map<string, { cloneDataBytes: number; uniqueBytes: number }>>;
}


export const DEFAULT_POOLS = [
  { name: 'fast', tier: 'fast' },
  { name: 'capacity', tier: 'capacity' },
] as const;

export class StoragePoolService {
  #db: Kysely<Database>;
  #repo = new StoragePoolRepository();
  #settings = new SettingsRepository();
  #events: EventBus;
  #engine: PoolEngine | undefined;
  /** Thicket's data directory, learnt from ensureDefaults (always called at start-up). */
  #dataDir: string | undefined;

  constructor(db: Kysely<Database>, events: EventBus) {
    this.#db = db;
    this.#events = events;
  }

  attachEngine(engine: PoolEngine): void {
    this.#engine = engine;
  }

  /** On the very first start, creates the `fast` and `capacity` pools under <data>/pools. */
  async ensureDefaults(dataDir: string): Promise<void> {
    this.#dataDir = path.resolve(dataDir);
    const done = await this.#settings.get<boolean>(this.#db, 'bootstrap.default_storage_pools');
    if (done) return;
    for (const pool of DEFAULT_POOLS) {
      const poolPath = path.join(dataDir, 'pools', pool.name);
      await mkdir(poolPath, { recursive: true });
      await preparePoolDirectories(poolPath);
      if (await this.#repo.getByName(this.#db, pool.name)) continue;
      try {
        await this.#repo.insert(this.#db, { id: randomUUID(), name: pool.name, path: poolPath, tier: pool.tier });
      } catch (err) {
        if (!isUniqueViolation(err)) throw err;
      }
    }
    await this.#settings.set(this.#db, 'bootstrap.default_storage_pools', true);
  }

  async list(): Promise<StoragePoolDto[]> {
    const rows = await this.#repo.list(this.#db);
    const engineUsage = await this.#engineUsage();
    return Promise.all(rows.map((row) => this.#toDto(row, engineUsage)));
  }

  async get(id: string): Promise<StoragePoolDto> {
    return this.#toDto(await this.getRow(id), await this.#engineUsage());
  }

  async #engineUsage() {
    return this.#engine ? this.#engine.usage() : new Map<string, { cloneDataBytes: number; uniqueBytes: number }>();
  }

  async getRow(id: string): Promise<StoragePoolRow> {
    const row = await this.#repo.get(this.#db, id);
    if (!row) throw new AppError('STORAGE_POOL_NOT_FOUND', `storage pool ${id} does not exist`);
    return row;
  }

  async create(input: { name: string; path: string; tier: string; capacityBytes?: number }): Promise<StoragePoolDto> {
    const poolPath = path.normalize(input.path).replace(/(.)\/+$/, '$1');
    const problem = await checkPoolPath(poolPath);
    if (problem) throw new AppError('INVALID_STORAGE_POOL_PATH', `path: ${problem}`, { field: 'path', path: input.path });
    // Paths are compared after resolving symbolic links: two pools sharing one directory would each take
    // the other's replica files for orphans and delete them.
    const real = await realpathOr(poolPath);
    const existing = await this.#repo.list(this.#db);
    for (const other of existing) {
      if (other.name === input.name) throw new AppError('NAME_TAKEN', `a storage pool named "${input.name}" already exists`, { field: 'name' });
      const otherReal = await realpathOr(other.path);
      if (otherReal === real) throw new AppError('CONFLICT', `storage pool "${other.name}" already uses ${poolPath}`, { field: 'path' });
      if (isInside(real, otherReal) || isInside(otherReal, real)) {
        throw new AppError('CONFLICT', `path ${poolPath} overlaps storage pool "${other.name}" at ${other.path}`, { field: 'path' });
      }
    }
    await this.#refuseDataDirectory(real, input.path);
    await preparePoolDirectories(poolPath);
    let row: StoragePoolRow;
    try {
      row = await this.#repo.insert(this.#db, { id: randomUUID(), name: input.name, path: poolPath, tier: input.tier, capacity_bytes: input.capacityBytes ?? null });
    } catch (err) {
      if (isUniqueViolation(err)) throw new AppError('NAME_TAKEN', `a storage pool with that name or path already exists`);
      throw err;
    }
    if (this.#engine) {
      try {
        await this.#engine.openPool(row.id);
      } catch (err) {
        await this.#repo.delete(this.#db, row.id);
        // The engine preallocates the pool's journal; a device without room for it is the caller's problem.
        if ((err as NodeJS.ErrnoException)?.code === 'ENOSPC') {
          throw new AppError('INSUFFICIENT_SPACE', `path: the device at ${poolPath} has no room for the storage pool's journal`, { field: 'path', path: input.path });
        }
        throw err;
      }
    }
    this.#events.emit('storage-pool.created', { storagePoolId: row.id, name: row.name, tier: row.tier });
    return this.#toDto(row, await this.#engineUsage());
  }

  /**
   * Thicket owns its data directory: its database and template files must not receive a pool's replicas/
   * and clones/ directories (the template sweep at start-up would remove them). Only <data>/pools/ may
   * hold further pools.
   */
  async #refuseDataDirectory(real: string, given: string): Promise<void> {
    if (!this.#dataDir) return;
    const dataDir = await realpathOr(this.#dataDir);
    if (real === dataDir || (isInside(real, dataDir) && !isInside(real, path.join(dataDir, 'pools')))) {
      throw new AppError('INVALID_STORAGE_POOL_PATH', `path: ${given} is inside Thicket's data directory; only ${path.join(dataDir, 'pools')} may hold storage pools there`, {
        field: 'path',
        path: given,
      });
    }
  }

  async delete(id: string): Promise<void> {
    await this.#db.transaction().execute(async (trx) => {
      const row = await trx.selectFrom('storage_pools').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
      if (!row) throw new AppError('STORAGE_POOL_NOT_FOUND', `storage pool ${id} does not exist`);
      const usage = await this.#repo.usage(trx, id);
      if (usage.replicaCount > 0 || usage.cloneCount > 0) {
        throw new AppError('STORAGE_POOL_IN_USE', `storage pool "${row.name}" still holds ${usage.replicaCount} replica(s) and ${usage.cloneCount} clone(s)`, {
          replicas: usage.replicaCount,
          clones: usage.cloneCount,
        });
      }
      await this.#repo.delete(trx, id);
    });
    await this.#engine?.closePool(id);
    this.#events.emit('storage-pool.deleted', { storagePoolId: id });
  }

  async #toDto(row: StoragePoolRow, engineUsage: Map<string, { cloneDataBytes: number; uniqueBytes: number }>): Promise<StoragePoolDto> {
    const usage = await this.#repo.usage(this.#db, row.id);
    let capacity = { capacityBytes: 0, usedBytes: 0, freeBytes: 0 };
    try {
      capacity = await poolCapacity(row.path);
    } catch {
      // A pool whose device is gone reports zero capacity rather than failing the whole listing.
    }
    const live = engineUsage.get(row.id);
    const cloneBytes = live ? live.cloneDataBytes : usage.cloneBytes;
    const configured = row.capacity_bytes === null || row.capacity_bytes === undefined ? null : Number(row.capacity_bytes);
    if (configured !== null) {
      // A configured capacity is the pool's own budget: what Thicket keeps there counts against it.
      const used = usage.replicaBytes + cloneBytes;
      capacity = {
        capacityBytes: Math.min(configured, capacity.capacityBytes || configured),
        usedBytes: used,
        freeBytes: Math.max(0, Math.min(configured - used, capacity.freeBytes)),
      };
    }
    return {
      id: row.id,
      name: row.name,
      path: row.path,
      tier: row.tier,
      configuredCapacityBytes: configured,
      createdAt: new Date(row.created_at).toISOString(),
      usage: { ...capacity, replicaBytes: usage.replicaBytes, cloneBytes },
      replicaCount: usage.replicaCount,
      cloneCount: usage.cloneCount,
    };
  }
}

async function realpathOr(p: string): Promise<string> {
  try {
    return await realpath(p);
  } catch {
    return path.resolve(p);
  }
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}
