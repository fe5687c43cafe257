import { sql } from 'kysely';
import type { EventRow } from '../schema.ts';
import type { Executor } from './executor.ts';

export class EventRepository {
  insert(db: Executor, type: string, data: Record<string, unknown>): Promise<EventRow> {
    return db.insertInto('events').values({ type, data: JSON.stringify(data) }).returningAll().executeTakeFirstOrThrow();
  }

  /** Inserts and notifies `channel` with the new seq in the same statement (PostgreSQL shared by nodes). */
  async insertAndNotify(db: Executor, type: string, data: Record<string, unknown>, channel: string): Promise<EventRow> {
    const r = await sql<EventRow>`WITH e AS (INSERT INTO events (type, data) VALUES (${type}, ${JSON.stringify(data)}) RETURNING *)
      SELECT e.*, pg_notify(${channel}, e.seq::text) AS notified FROM e`.execute(db);
    const { notified: _notified, ...row } = r.rows[0] as EventRow & { notified: unknown };
    return row;
  }

  bySeqs(db: Executor, seqs: number[]): Promise<EventRow[]> {
    return db.selectFrom('events').selectAll().where('seq', 'in', seqs).orderBy('seq').execute();
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
