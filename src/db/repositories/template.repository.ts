import { sql } from 'kysely';
import type { TemplateRow, TemplateVersionRow } from '../schema.ts';
import type { Executor } from './executor.ts';

export class TemplateRepository {
  list(db: Executor): Promise<TemplateRow[]> {
    return db.selectFrom('templates').selectAll().orderBy('name').execute();
  }

  get(db: Executor, id: string): Promise<TemplateRow | undefined> {
    return db.selectFrom('templates').selectAll().where('id', '=', id).executeTakeFirst();
  }

  /** Locks the template row so concurrent version uploads number their versions one after the other. */
  getForUpdate(db: Executor, id: string): Promise<TemplateRow | undefined> {
    return db.selectFrom('templates').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
  }

  insert(db: Executor, row: { id: string; name: string; description: string }): Promise<TemplateRow> {
    return db.insertInto('templates').values(row).returningAll().executeTakeFirstOrThrow();
  }

  async delete(db: Executor, id: string): Promise<boolean> {
    const r = await db.deleteFrom('templates').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  listVersions(db: Executor, templateId: string): Promise<TemplateVersionRow[]> {
    return db.selectFrom('template_versions').selectAll().where('template_id', '=', templateId).orderBy('version').execute();
  }

  versionCounts(db: Executor): Promise<Array<{ template_id: string; count: number; latest: number | null }>> {
    return db
      .selectFrom('template_versions')
      .select(['template_id', sql<number>`count(*)::int8`.as('count'), sql<number | null>`max(version)`.as('latest')])
      .groupBy('template_id')
      .execute();
  }

  getVersion(db: Executor, id: string): Promise<TemplateVersionRow | undefined> {
    return db.selectFrom('template_versions').selectAll().where('id', '=', id).executeTakeFirst();
  }

  async nextVersionNumber(db: Executor, templateId: string): Promise<number> {
    const r = await db
      .selectFrom('template_versions')
      .select(sql<number | null>`max(version)`.as('latest'))
      .where('template_id', '=', templateId)
      .executeTakeFirst();
    return (r?.latest ?? 0) + 1;
  }

  insertVersion(
    db: Executor,
    row: { id: string; template_id: string; version: number; size_bytes: number; sha256: string; format: string },
  ): Promise<TemplateVersionRow> {
    return db.insertInto('template_versions').values(row).returningAll().executeTakeFirstOrThrow();
  }

  allVersionIds(db: Executor): Promise<Array<{ id: string; template_id: string }>> {
    return db.selectFrom('template_versions').select(['id', 'template_id']).execute();
  }
}
