// The block store's public face: storage pools, replicas and clones, addressed by id. It imports nothing
// outside src/engine: no NVMe, no SQL.
import { BLOCK_SIZE_BYTES } from './block-size.ts';
import type { Clone } from './clone.ts';
import { CloneNotFoundError, EngineError } from './errors.ts';
import { PoolStore, type PoolOptions, type RecoveryReport } from './pool-store.ts';
import { DEFAULT_REPLICA_CACHE_BYTES, ReplicaCache } from './replica-cache.ts';
import { ReplicaImage } from './replica-image.ts';
import type { QosLimits } from './token-bucket.ts';

export interface EngineOptions {
  replicaCacheBytes?: number;
  journalBytes?: number;
  reserveBytes?: number;
}

export interface ReplicaRef {
  id: string;
  path: string;
  sizeBytes: number;
}

export interface CreateCloneInput {
  id: string;
  poolId: string;
  replica: ReplicaRef;
  sizeBytes?: number;
  qos?: QosLimits;
}

export interface CloneInfo {
  id: string;
  poolId: string;
  replicaId: string;
  sizeBytes: number;
  uniqueBytes: number;
  sharedBytes: number;
  failed: string | null;
  qos: QosLimits;
}

export class Engine {
  readonly cache: ReplicaCache;
  readonly pools = new Map<string, PoolStore>();
  readonly replicas = new Map<string, ReplicaImage>();
  readonly #clones = new Map<string, { clone: Clone; pool: PoolStore }>();
  #options: EngineOptions;
  onError: (err: unknown) => void = () => {};

  constructor(options: EngineOptions = {}) {
    this.#options = options;
    this.cache = new ReplicaCache(options.replicaCacheBytes ?? DEFAULT_REPLICA_CACHE_BYTES);
  }

  replica(ref: ReplicaRef): ReplicaImage {
    let r = this.replicas.get(ref.id);
    if (!r) {
      r = new ReplicaImage(ref.id, ref.path, ref.sizeBytes);
      this.replicas.set(ref.id, r);
    }
    return r;
  }

  /** Opens a pool and recovers the listed clones (everything else under it is removed). */
  async openPool(options: PoolOptions, clones: Array<Omit<CreateCloneInput, 'poolId'>>): Promise<RecoveryReport> {
    if (this.pools.has(options.id)) throw new EngineError('POOL_OPEN', `storage pool ${options.id} is already open`);
    const pool = new PoolStore(
      { journalBytes: this.#options.journalBytes, reserveBytes: this.#options.reserveBytes, ...options },
      this.cache,
    );
    pool.onError = (err) => this.onError(err);
    const specs = clones.map((c) => ({
      id: c.id,
      replica: this.replica(c.replica),
      sizeBytes: this.#cloneSize(c.sizeBytes, c.replica.sizeBytes),
      qos: c.qos,
    }));
    const report = await pool.open(specs);
    this.pools.set(options.id, pool);
    for (const c of pool.clones.values()) {
      c.replica.refs++;
      this.#clones.set(c.id, { clone: c, pool });
    }
    return report;
  }

  pool(id: string): PoolStore {
    const p = this.pools.get(id);
    if (!p) throw new EngineError('POOL_NOT_OPEN', `storage pool ${id} is not open in the engine`);
    return p;
  }

  #cloneSize(requested: number | undefined, replicaBytes: number): number {
    const size = requested ?? replicaBytes;
    if (size < replicaBytes) throw new EngineError('CLONE_TOO_SMALL', `a clone must be at least as large as its replica (${replicaBytes} bytes)`);
    if (size % BLOCK_SIZE_BYTES !== 0) throw new EngineError('CLONE_SIZE', `a clone's size must be a multiple of ${BLOCK_SIZE_BYTES}`);
    return size;
  }

  /** Creates a clone: no data is written and the cost does not depend on its size. */
  createClone(input: CreateCloneInput): Clone {
    if (this.#clones.has(input.id)) throw new EngineError('CLONE_EXISTS', `clone ${input.id} already exists`);
    const pool = this.pool(input.poolId);
    const replica = this.replica(input.replica);
    const clone = pool.createClone({ id: input.id, replica, sizeBytes: this.#cloneSize(input.sizeBytes, input.replica.sizeBytes), qos: input.qos });
    replica.refs++;
    this.#clones.set(input.id, { clone, pool });
    return clone;
  }

  createClones(inputs: CreateCloneInput[]): Clone[] {
    for (const i of inputs) {
      this.pool(i.poolId);
      if (this.#clones.has(i.id)) throw new EngineError('CLONE_EXISTS', `clone ${i.id} already exists`);
      this.#cloneSize(i.sizeBytes, i.replica.sizeBytes);
    }
    return inputs.map((i) => this.createClone(i));
  }

  clone(id: string): Clone {
    const entry = this.#clones.get(id);
    if (!entry) throw new CloneNotFoundError(id);
    return entry.clone;
  }

  hasClone(id: string): boolean {
    return this.#clones.has(id);
  }

  get cloneCount(): number {
    return this.#clones.size;
  }

  info(id: string): CloneInfo {
    const entry = this.#clones.get(id);
    if (!entry) throw new CloneNotFoundError(id);
    const c = entry.clone;
    return {
      id,
      poolId: entry.pool.id,
      replicaId: c.replica.id,
      sizeBytes: c.sizeBytes,
      uniqueBytes: c.uniqueBytes,
      sharedBytes: c.sharedBytes,
      failed: c.failed ?? null,
      qos: c.qos.limits,
    };
  }

  async deleteClone(id: string): Promise<void> {
    const entry = this.#clones.get(id);
    if (!entry) return;
    this.#clones.delete(id);
    entry.clone.replica.refs--;
    await entry.pool.deleteClone(id);
  }

  /**
   * Drops every change of a clone. Also repairs a clone marked failed at start-up (a damaged map or data
   * file): the reset needs neither, and a fresh checkpoint is written at once, or the next start would
   * read the damaged one and fail the clone again.
   */
  async resetClone(id: string): Promise<void> {
    const entry = this.#clones.get(id);
    if (!entry) throw new CloneNotFoundError(id);
    const wasFailed = entry.clone.failed !== undefined;
    await entry.clone.reset();
    if (wasFailed) await entry.pool.checkpointClone(entry.clone);
  }

  setQos(id: string, qos: QosLimits): void {
    this.clone(id).setQos(qos);
  }

  /** Switches a replica (and so every clone of it) to an identical copy at a new path. */
  repointReplica(replicaId: string, newPath: string): void {
    const r = this.replicas.get(replicaId);
    if (r) r.repoint(newPath);
  }

  /** Moves one clone to another replica with identical bytes. */
  reparentClone(cloneId: string, replica: ReplicaRef): void {
    const c = this.clone(cloneId);
    const next = this.replica(replica);
    if (next.sizeBytes !== c.replica.sizeBytes) throw new EngineError('REPLICA_MISMATCH', 'the new parent must have the same size');
    c.replica.refs--;
    next.refs++;
    c.replica = next;
  }

  /**
   * Recompose: drops the clone's changes (a durable reset) and makes `replica` its parent, growing the
   * clone if the new replica is larger. The caller records the new parent once this resolves.
   */
  async recomposeClone(cloneId: string, replica: ReplicaRef, sizeBytes?: number): Promise<void> {
    const c = this.clone(cloneId);
    const next = this.replica(replica);
    const size = Math.max(sizeBytes ?? 0, c.sizeBytes, next.sizeBytes);
    if (size % BLOCK_SIZE_BYTES !== 0) throw new EngineError('CLONE_SIZE', `a clone's size must be a multiple of ${BLOCK_SIZE_BYTES}`);
    const wasFailed = c.failed !== undefined;
    await c.reset();
    if (wasFailed) await this.#clones.get(cloneId)!.pool.checkpointClone(c);
    c.replica.refs--;
    next.refs++;
    c.replica = next;
    c.sizeBytes = size;
    c.capacityBlocks = size / BLOCK_SIZE_BYTES;
  }

  /** Closes a replica no clone uses (before its file is deleted). */
  releaseReplica(replicaId: string): void {
    const r = this.replicas.get(replicaId);
    if (!r || r.refs > 0) return;
    this.cache.dropReplica(r);
    r.close();
    this.replicas.delete(replicaId);
  }

  async close(): Promise<void> {
    for (const pool of this.pools.values()) await pool.close();
    this.pools.clear();
    this.#clones.clear();
    for (const r of this.replicas.values()) r.close();
    this.replicas.clear();
  }
}
