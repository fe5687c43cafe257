import { sql } from 'kysely';
import type { ReplicaRow, ReplicaState } from '../schema.ts';
import type { Executor } from './executor.ts';

export type ReplicaWithCount = ReplicaRow & { clone_count: number };

export class ReplicaRepository {
  #withCount(db: Executor) {
    return db
      .selectFrom('replicas')
      .selectAll('replicas')
      .select(sql<number>`(SELECT count(*)::int8 FROM clones WHERE clones.replica_id = replicas.id)`.as('clone_count'));
  }

  list(db: Executor, filter: { storagePoolId?: string; templateId?: string } = {}): Promise<ReplicaWithCount[]> {
    let q = this.#withCount(db);
    if (filter.storagePoolId) q = q.where('storage_pool_id', '=', filter.storagePoolId);
    if (filter.templateId) q = q.where('template_id', '=', filter.templateId);
    return q.orderBy('created_at').execute();
  }

  get(db: Executor, id: string): Promise<ReplicaWithCount | undefined> {
    return this.#withCount(db).where('id', '=', id).executeTakeFirst();
  }

  getForUpdate(db: Executor, id: string): Promise<ReplicaRow | undefined> {
    return db.selectFrom('replicas').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
  }

  insert(
    db: Executor,
    row: Omit<ReplicaRow, 'created_at' | 'updated_at' | 'error'> & { error?: string | null },
  ): Promise<ReplicaRow> {
    return db.insertInto('replicas').values(row).returningAll().executeTakeFirstOrThrow();
  }

  async setState(db: Executor, id: string, state: ReplicaState, error: string | null = null): Promise<void> {
    await db.updateTable('replicas').set({ state, error, updated_at: sql`now()` as never }).where('id', '=', id).execute();
  }

  async setStoragePool(db: Executor, id: string, storagePoolId: string): Promise<void> {
    await db.updateTable('replicas').set({ storage_pool_id: storagePoolId, updated_at: sql`now()` as never }).where('id', '=', id).execute();
  }

  async delete(db: Executor, id: string): Promise<boolean> {
    const r = await db.deleteFrom('replicas').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async cloneCountOf(db: Executor, replicaId: string): Promise<number> {
    const r = await db.selectFrom('clones').select((eb) => eb.fn.countAll<string>().as('n')).where('replica_id', '=', replicaId).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  clonesOf(db: Executor, replicaId: string, limit = 1000): Promise<Array<{ id: string; name: string }>> {
    return db.selectFrom('clones').select(['id', 'name']).where('replica_id', '=', replicaId).orderBy('name').limit(limit).execute();
  }

  /** Desktop pools built on the replica, or with desktops still on it (a recompose in progress). */
  desktopPoolsOf(db: Executor, replicaId: string): Promise<Array<{ id: string; name: string }>> {
    return db
      .selectFrom('desktop_pools')
      .select(['desktop_pools.id', 'desktop_pools.name'])
      .where((eb) =>
        eb.or([
          eb('desktop_pools.replica_id', '=', replicaId),
          eb.exists(
            eb
              .selectFrom('desktops')
              .innerJoin('clones', 'clones.id', 'desktops.clone_id')
              .select('desktops.id')
              .whereRef('desktops.pool_id', '=', 'desktop_pools.id')
              .where('clones.replica_id', '=', replicaId),
          ),
        ]),
      )
      .orderBy('desktop_pools.name')
      .execute();
  }

  idsInPool(db: Executor, storagePoolId: string): Promise<Array<{ id: string }>> {
    return db.selectFrom('replicas').select('id').where('storage_pool_id', '=', storagePoolId).execute();
  }
}
