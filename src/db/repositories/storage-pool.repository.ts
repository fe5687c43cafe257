import { sql } from 'kysely';
import type { StoragePoolRow } from '../schema.ts';
import type { Executor } from './executor.ts';

export class StoragePoolRepository {
  list(db: Executor): Promise<StoragePoolRow[]> {
    return db.selectFrom('storage_pools').selectAll().orderBy('created_at').orderBy('name').execute();
  }

  get(db: Executor, id: string): Promise<StoragePoolRow | undefined> {
    return db.selectFrom('storage_pools').selectAll().where('id', '=', id).executeTakeFirst();
  }

  getByName(db: Executor, name: string): Promise<StoragePoolRow | undefined> {
    return db.selectFrom('storage_pools').selectAll().where('name', '=', name).executeTakeFirst();
  }

  async insert(db: Executor, row: { id: string; name: string; path: string; tier: string; capacity_bytes?: number | null }): Promise<StoragePoolRow> {
    return db.insertInto('storage_pools').values(row).returningAll().executeTakeFirstOrThrow();
  }

  async delete(db: Executor, id: string): Promise<boolean> {
    const r = await db.deleteFrom('storage_pools').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /** Bytes of replicas and clones per pool, as the database knows them. */
  async usage(db: Executor, id: string): Promise<{ replicaCount: number; cloneCount: number; replicaBytes: number; cloneBytes: number }> {
    const r = await sql<{ replica_count: number; clone_count: number; replica_bytes: number; clone_bytes: number }>`
      SELECT
        (SELECT count(*)::int8 FROM replicas WHERE storage_pool_id = ${id}) AS replica_count,
        (SELECT count(*)::int8 FROM clones WHERE storage_pool_id = ${id}) AS clone_count,
        (SELECT coalesce(sum(size_bytes), 0)::int8 FROM replicas WHERE storage_pool_id = ${id} AND state IN ('creating', 'ready', 'corrupt')) AS replica_bytes,
        (SELECT coalesce(sum(unique_bytes), 0)::int8 FROM clones WHERE storage_pool_id = ${id}) AS clone_bytes
    `.execute(db);
    const row = r.rows[0];
    return { replicaCount: row.replica_count, cloneCount: row.clone_count, replicaBytes: row.replica_bytes, cloneBytes: row.clone_bytes };
  }
}
