import type { Executor } from './executor.ts';

export class SettingsRepository {
  async get<T>(db: Executor, key: string): Promise<T | undefined> {
    const row = await db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
    return row ? (row.value as T) : undefined;
  }

  /** Inserts the value unless the key exists; returns whether this call set it. */
  async setIfAbsent(db: Executor, key: string, value: unknown): Promise<boolean> {
    const r = await db
      .insertInto('settings')
      .values({ key, value: JSON.stringify(value) })
      .onConflict((oc) => oc.column('key').doNothing())
      .executeTakeFirst();
    return Number(r.numInsertedOrUpdatedRows ?? 0n) > 0;
  }

  async set(db: Executor, key: string, value: unknown): Promise<void> {
    await db
      .insertInto('settings')
      .values({ key, value: JSON.stringify(value) })
      .onConflict((oc) => oc.column('key').doUpdateSet({ value: JSON.stringify(value), updated_at: new Date() }))
      .execute();
  }
}
