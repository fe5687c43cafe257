import type { EventRow } from '../schema.ts';
import type { Executor } from './executor.ts';

export class EventRepository {
  insert(db: Executor, type: string, data: Record<string, unknown>): Promise<EventRow> {
    return db.insertInto('events').values({ type, data: JSON.stringify(data) }).returningAll().executeTakeFirstOrThrow();
  }

  since(db: Executor, seq: number, limit: number): Promise<EventRow[]> {
    return db.selectFrom('events').selectAll().where('seq', '>', seq).orderBy('seq').limit(limit).execute();
  }

  async latestSeq(db: Executor): Promise<number> {
    const r = await db.selectFrom('events').select((eb) => eb.fn.max('seq').as('seq')).executeTakeFirst();
    return Number(r?.seq ?? 0);
  }

  /** Keeps the newest `keep` events. */
  async prune(db: Executor, keep: number): Promise<void> {
    const latest = await this.latestSeq(db);
    if (latest > keep) await db.deleteFrom('events').where('seq', '<=', latest - keep).execute();
  }
}
