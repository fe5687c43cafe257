import { sql } from 'kysely';
import type { Insertable, Updateable } from 'kysely';
import type { HostRow, HostsTable, NamespaceRow, SubsystemRow } from '../schema.ts';
import type { Executor } from './executor.ts';

export class HostRepository {
  list(db: Executor): Promise<HostRow[]> {
    return db.selectFrom('hosts').selectAll().orderBy('name').execute();
  }
  get(db: Executor, id: string): Promise<HostRow | undefined> {
    return db.selectFrom('hosts').selectAll().where('id', '=', id).executeTakeFirst();
  }
  getMany(db: Executor, ids: string[]): Promise<HostRow[]> {
    if (ids.length === 0) return Promise.resolve([]);
    return db.selectFrom('hosts').selectAll().where('id', 'in', ids).execute();
  }
  insert(db: Executor, row: Insertable<HostsTable>): Promise<HostRow> {
    return db.insertInto('hosts').values(row).returningAll().executeTakeFirstOrThrow();
  }
  update(db: Executor, id: string, set: Updateable<HostsTable>): Promise<HostRow | undefined> {
    return db.updateTable('hosts').set(set).where('id', '=', id).returningAll().executeTakeFirst();
  }
  async pinHostKey(db: Executor, id: string, fingerprint: string | null): Promise<HostRow | undefined> {
    return db.updateTable('hosts').set({ host_key_fingerprint: fingerprint }).where('id', '=', id).returningAll().executeTakeFirst();
  }
  /** Desktops placed on each of the given hosts, over all pools. */
  async desktopCounts(db: Executor, hostIds: string[]): Promise<Map<string, number>> {
    if (hostIds.length === 0) return new Map();
    const rows = await db.selectFrom('desktops').select(['host_id', sql<number>`count(*)::int4`.as('n')]).where('host_id', 'in', hostIds).groupBy('host_id').execute();
    return new Map(rows.map((r) => [r.host_id!, Number(r.n)]));
  }
  async delete(db: Executor, id: string): Promise<boolean> {
    const r = await db.deleteFrom('hosts').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
  subsystemsOf(db: Executor, hostId: string): Promise<Array<{ id: string; name: string; nqn: string }>> {
    return db
      .selectFrom('subsystem_hosts')
      .innerJoin('subsystems', 'subsystems.id', 'subsystem_hosts.subsystem_id')
      .select(['subsystems.id', 'subsystems.name', 'subsystems.nqn'])
      .where('subsystem_hosts.host_id', '=', hostId)
      .execute();
  }
}

export class SubsystemRepository {
  list(db: Executor): Promise<SubsystemRow[]> {
    return db.selectFrom('subsystems').selectAll().orderBy('name').execute();
  }
  get(db: Executor, id: string): Promise<SubsystemRow | undefined> {
    return db.selectFrom('subsystems').selectAll().where('id', '=', id).executeTakeFirst();
  }
  getForUpdate(db: Executor, id: string): Promise<SubsystemRow | undefined> {
    return db.selectFrom('subsystems').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
  }
  insert(db: Executor, row: { id: string; name: string; nqn: string }): Promise<SubsystemRow> {
    return db.insertInto('subsystems').values(row).returningAll().executeTakeFirstOrThrow();
  }
  async delete(db: Executor, id: string): Promise<boolean> {
    const r = await db.deleteFrom('subsystems').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
  hosts(db: Executor, subsystemId: string): Promise<HostRow[]> {
    return db
      .selectFrom('subsystem_hosts')
      .innerJoin('hosts', 'hosts.id', 'subsystem_hosts.host_id')
      .selectAll('hosts')
      .where('subsystem_hosts.subsystem_id', '=', subsystemId)
      .orderBy('hosts.name')
      .execute();
  }
  async addHost(db: Executor, subsystemId: string, hostId: string): Promise<void> {
    await db.insertInto('subsystem_hosts').values({ subsystem_id: subsystemId, host_id: hostId }).onConflict((oc) => oc.doNothing()).execute();
  }
  async removeHost(db: Executor, subsystemId: string, hostId: string): Promise<boolean> {
    const r = await db.deleteFrom('subsystem_hosts').where('subsystem_id', '=', subsystemId).where('host_id', '=', hostId).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
  namespaces(db: Executor, subsystemId: string): Promise<NamespaceRow[]> {
    return db.selectFrom('namespaces').selectAll().where('subsystem_id', '=', subsystemId).orderBy('nsid').execute();
  }
  allNamespaces(db: Executor): Promise<NamespaceRow[]> {
    return db.selectFrom('namespaces').selectAll().execute();
  }
  allSubsystemHosts(db: Executor): Promise<Array<{ subsystem_id: string; nqn: string }>> {
    return db.selectFrom('subsystem_hosts').innerJoin('hosts', 'hosts.id', 'subsystem_hosts.host_id').select(['subsystem_hosts.subsystem_id', 'hosts.nqn']).execute();
  }
  namespaceOfClone(db: Executor, cloneId: string): Promise<NamespaceRow | undefined> {
    return db.selectFrom('namespaces').selectAll().where('clone_id', '=', cloneId).executeTakeFirst();
  }
  getNamespace(db: Executor, subsystemId: string, nsid: number): Promise<NamespaceRow | undefined> {
    return db.selectFrom('namespaces').selectAll().where('subsystem_id', '=', subsystemId).where('nsid', '=', nsid).executeTakeFirst();
  }
  async insertNamespaces(db: Executor, rows: Array<{ subsystem_id: string; nsid: number; clone_id: string; uuid: string; nguid: string; visible_host_ids: string[] | null }>): Promise<void> {
    if (rows.length === 0) return;
    await db
      .insertInto('namespaces')
      .values(rows.map((r) => ({ ...r, visible_host_ids: r.visible_host_ids === null ? null : sql`${sql.val(r.visible_host_ids)}::uuid[]` as never })))
      .execute();
  }
  async deleteNamespace(db: Executor, subsystemId: string, nsid: number): Promise<NamespaceRow | undefined> {
    return db.deleteFrom('namespaces').where('subsystem_id', '=', subsystemId).where('nsid', '=', nsid).returningAll().executeTakeFirst();
  }
  usedNsids(db: Executor, subsystemId: string): Promise<number[]> {
    return db.selectFrom('namespaces').select('nsid').where('subsystem_id', '=', subsystemId).execute().then((r) => r.map((x) => x.nsid));
  }
}
