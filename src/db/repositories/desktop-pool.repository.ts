import { sql } from 'kysely';
import type { DesktopPoolRow, DesktopRow, DesktopState } from '../schema.ts';
import type { Executor } from './executor.ts';

export type NewDesktop = Pick<DesktopRow, 'id' | 'pool_id' | 'idx' | 'name' | 'clone_id' | 'subsystem_id' | 'nsid' | 'state' | 'job_id'>;

export class DesktopPoolRepository {
  list(db: Executor): Promise<DesktopPoolRow[]> {
    return db.selectFrom('desktop_pools').selectAll().orderBy('name').execute();
  }
  get(db: Executor, id: string): Promise<DesktopPoolRow | undefined> {
    return db.selectFrom('desktop_pools').selectAll().where('id', '=', id).executeTakeFirst();
  }
  getForUpdate(db: Executor, id: string): Promise<DesktopPoolRow | undefined> {
    return db.selectFrom('desktop_pools').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
  }
  insert(
    db: Executor,
    row: Omit<DesktopPoolRow, 'created_at' | 'updated_at' | 'error' | 'refresh_grace_seconds' | 'refresh_on_logoff' | 'vm_vcpus' | 'vm_memory_mib' | 'vm_network'> &
      Partial<Pick<DesktopPoolRow, 'refresh_grace_seconds' | 'refresh_on_logoff' | 'vm_vcpus' | 'vm_memory_mib' | 'vm_network'>>,
  ): Promise<DesktopPoolRow> {
    return db.insertInto('desktop_pools').values({ ...row, error: null }).returningAll().executeTakeFirstOrThrow();
  }
  async update(db: Executor, id: string, set: Partial<Pick<DesktopPoolRow, 'state' | 'error' | 'size' | 'replica_id'>>): Promise<void> {
    await db.updateTable('desktop_pools').set({ ...set, updated_at: sql`now()` as never }).where('id', '=', id).execute();
  }
  async delete(db: Executor, id: string): Promise<void> {
    await db.deleteFrom('desktop_pools').where('id', '=', id).execute();
  }
  async setHosts(db: Executor, poolId: string, hostIds: string[]): Promise<void> {
    if (hostIds.length === 0) return;
    await db.insertInto('desktop_pool_hosts').values(hostIds.map((h) => ({ pool_id: poolId, host_id: h }))).onConflict((oc) => oc.doNothing()).execute();
  }
  hostIds(db: Executor, poolId: string): Promise<string[]> {
    return db.selectFrom('desktop_pool_hosts').select('host_id').where('pool_id', '=', poolId).execute().then((r) => r.map((x) => x.host_id));
  }
  subsystems(db: Executor, poolId: string): Promise<Array<{ subsystem_id: string; ordinal: number; nqn: string; name: string }>> {
    return db
      .selectFrom('desktop_pool_subsystems')
      .innerJoin('subsystems', 'subsystems.id', 'desktop_pool_subsystems.subsystem_id')
      .select(['desktop_pool_subsystems.subsystem_id', 'desktop_pool_subsystems.ordinal', 'subsystems.nqn', 'subsystems.name'])
      .where('desktop_pool_subsystems.pool_id', '=', poolId)
      .orderBy('desktop_pool_subsystems.ordinal')
      .execute();
  }
  async addSubsystem(db: Executor, poolId: string, subsystemId: string, ordinal: number): Promise<void> {
    await db.insertInto('desktop_pool_subsystems').values({ pool_id: poolId, subsystem_id: subsystemId, ordinal }).execute();
  }
  desktops(db: Executor, poolId: string): Promise<DesktopRow[]> {
    return db.selectFrom('desktops').selectAll().where('pool_id', '=', poolId).orderBy('idx').execute();
  }
  desktopByName(db: Executor, poolId: string, name: string): Promise<DesktopRow | undefined> {
    return db.selectFrom('desktops').selectAll().where('pool_id', '=', poolId).where('name', '=', name).executeTakeFirst();
  }
  async counts(db: Executor): Promise<Array<{ pool_id: string; state: string; n: number }>> {
    return db.selectFrom('desktops').select(['pool_id', 'state', sql<number>`count(*)::int8`.as('n')]).groupBy(['pool_id', 'state']).execute();
  }
  async insertDesktops(db: Executor, rows: NewDesktop[]): Promise<void> {
    if (rows.length === 0) return;
    await sql`
      INSERT INTO desktops (id, pool_id, idx, name, clone_id, subsystem_id, nsid, state, job_id)
      SELECT * FROM unnest(
        ${rows.map((r) => r.id)}::uuid[], ${rows.map((r) => r.pool_id)}::uuid[], ${rows.map((r) => r.idx)}::int4[],
        ${rows.map((r) => r.name)}::text[], ${rows.map((r) => r.clone_id)}::uuid[], ${rows.map((r) => r.subsystem_id)}::uuid[],
        ${rows.map((r) => r.nsid)}::int4[], ${rows.map((r) => r.state)}::text[], ${rows.map((r) => r.job_id)}::uuid[])`.execute(db);
  }
  /**
   * Inserts a batch of desktops with their clones and namespaces in ONE statement (data-modifying CTEs):
   * one round trip and one parse for the whole burst batch.
   */
  async insertDesktopBatch(
    db: Executor,
    clones: Array<{ id: string; name: string; replica_id: string; storage_pool_id: string; size_bytes: number; qos_iops: number | null; qos_bytes_per_second: number | null }>,
    desktops: NewDesktop[],
    nguids: string[],
  ): Promise<void> {
    if (desktops.length === 0) return;
    await sql`
      WITH c AS (
        INSERT INTO clones (id, name, replica_id, storage_pool_id, size_bytes, state, qos_iops, qos_bytes_per_second)
        SELECT id, name, replica_id, storage_pool_id, size_bytes, 'ready', qos_iops, qos_bytes_per_second FROM unnest(
          ${clones.map((r) => r.id)}::uuid[], ${clones.map((r) => r.name)}::text[], ${clones.map((r) => r.replica_id)}::uuid[],
          ${clones.map((r) => r.storage_pool_id)}::uuid[], ${clones.map((r) => r.size_bytes)}::int8[],
          ${clones.map((r) => r.qos_iops)}::int4[], ${clones.map((r) => r.qos_bytes_per_second)}::int8[]
        ) AS t(id, name, replica_id, storage_pool_id, size_bytes, qos_iops, qos_bytes_per_second)
        RETURNING 1
      ), d AS (
        INSERT INTO desktops (id, pool_id, idx, name, clone_id, subsystem_id, nsid, state, job_id)
        SELECT * FROM unnest(
          ${desktops.map((r) => r.id)}::uuid[], ${desktops.map((r) => r.pool_id)}::uuid[], ${desktops.map((r) => r.idx)}::int4[],
          ${desktops.map((r) => r.name)}::text[], ${desktops.map((r) => r.clone_id)}::uuid[], ${desktops.map((r) => r.subsystem_id)}::uuid[],
          ${desktops.map((r) => r.nsid)}::int4[], ${desktops.map((r) => r.state)}::text[], ${desktops.map((r) => r.job_id)}::uuid[])
        RETURNING 1
      )
      INSERT INTO namespaces (subsystem_id, nsid, clone_id, uuid, nguid, visible_host_ids)
      SELECT s, n, c, c, g, NULL FROM unnest(
        ${desktops.map((r) => r.subsystem_id)}::uuid[], ${desktops.map((r) => r.nsid)}::int4[],
        ${desktops.map((r) => r.clone_id)}::uuid[], ${nguids}::text[]) AS t(s, n, c, g)`.execute(db);
  }

  async setStates(db: Executor, ids: string[], state: DesktopState): Promise<void> {
    if (ids.length === 0) return;
    await db.updateTable('desktops').set({ state, updated_at: sql`now()` as never }).where('id', 'in', ids).execute();
  }
  async deleteDesktops(db: Executor, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await db.deleteFrom('desktops').where('id', 'in', ids).execute();
  }
}
