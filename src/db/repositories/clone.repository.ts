import { sql } from 'kysely';
import type { CloneRow } from '../schema.ts';
import type { Executor } from './executor.ts';

export interface NewClone {
  id: string;
  name: string;
  replica_id: string;
  storage_pool_id: string;
  size_bytes: number;
  state: string;
  qos_iops: number | null;
  qos_bytes_per_second: number | null;
}

export class CloneRepository {
  list(db: Executor, filter: { replicaId?: string; storagePoolId?: string; limit?: number } = {}): Promise<CloneRow[]> {
    let q = db.selectFrom('clones').selectAll();
    if (filter.replicaId) q = q.where('replica_id', '=', filter.replicaId);
    if (filter.storagePoolId) q = q.where('storage_pool_id', '=', filter.storagePoolId);
    return q.orderBy('name').limit(filter.limit ?? 100_000).execute();
  }

  get(db: Executor, id: string): Promise<CloneRow | undefined> {
    return db.selectFrom('clones').selectAll().where('id', '=', id).executeTakeFirst();
  }

  getForUpdate(db: Executor, id: string): Promise<CloneRow | undefined> {
    return db.selectFrom('clones').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
  }

  /** Inserts many clones in one statement (a burst is one round trip, not one per clone). */
  async insertMany(db: Executor, rows: NewClone[]): Promise<void> {
    if (rows.length === 0) return;
    await sql`
      INSERT INTO clones (id, name, replica_id, storage_pool_id, size_bytes, state, qos_iops, qos_bytes_per_second)
      SELECT * FROM unnest(
        ${rows.map((r) => r.id)}::uuid[], ${rows.map((r) => r.name)}::text[], ${rows.map((r) => r.replica_id)}::uuid[],
        ${rows.map((r) => r.storage_pool_id)}::uuid[], ${rows.map((r) => r.size_bytes)}::int8[], ${rows.map((r) => r.state)}::text[],
        ${rows.map((r) => r.qos_iops)}::int4[], ${rows.map((r) => r.qos_bytes_per_second)}::int8[])`.execute(db);
  }

  async delete(db: Executor, id: string): Promise<boolean> {
    const r = await db.deleteFrom('clones').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async setQos(db: Executor, id: string, iops: number | null, bytesPerSecond: number | null): Promise<void> {
    await db.updateTable('clones').set({ qos_iops: iops, qos_bytes_per_second: bytesPerSecond, updated_at: sql`now()` as never }).where('id', '=', id).execute();
  }

  async setState(db: Executor, id: string, state: string, error: string | null = null): Promise<void> {
    await db.updateTable('clones').set({ state, error, updated_at: sql`now()` as never }).where('id', '=', id).execute();
  }

  async setUniqueBytes(db: Executor, values: Array<{ id: string; uniqueBytes: number }>): Promise<void> {
    if (values.length === 0) return;
    await sql`
      UPDATE clones SET unique_bytes = v.unique_bytes
      FROM unnest(${values.map((v) => v.id)}::uuid[], ${values.map((v) => v.uniqueBytes)}::int8[]) AS v(id, unique_bytes)
      WHERE clones.id = v.id AND clones.unique_bytes <> v.unique_bytes`.execute(db);
  }

  /** Clones with what the engine needs to open them: their replica's id, size and pool. */
  async listForEngine(db: Executor, storagePoolId: string) {
    return db
      .selectFrom('clones')
      .innerJoin('replicas', 'replicas.id', 'clones.replica_id')
      .innerJoin('storage_pools as rp', 'rp.id', 'replicas.storage_pool_id')
      .select([
        'clones.id as id',
        'clones.size_bytes as size_bytes',
        'clones.qos_iops as qos_iops',
        'clones.qos_bytes_per_second as qos_bytes_per_second',
        'replicas.id as replica_id',
        'replicas.size_bytes as replica_size_bytes',
        'rp.path as replica_pool_path',
      ])
      .where('clones.storage_pool_id', '=', storagePoolId)
      .execute();
  }
}
