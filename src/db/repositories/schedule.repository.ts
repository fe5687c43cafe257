import { sql } from 'kysely';
import type { DesktopRow, DesktopState, ScheduleRow, ScheduleRunItemRow, ScheduleRunRow, SchedulesTable } from '../schema.ts';
import type { Executor } from './executor.ts';

export type NewSchedule = Omit<ScheduleRow, 'created_at' | 'updated_at'>;
export type ScheduleChanges = Partial<
  Pick<SchedulesTable, 'cron' | 'timezone' | 'action' | 'wave_size' | 'in_use' | 'wait_deadline_minutes' | 'max_failures_per_wave' | 'enabled' | 'pending_tick_at' | 'window_ends_at'>
>;

export interface ScheduleRunWithJob extends ScheduleRunRow {
  job_state: string | null;
  job_error: { code: string; message: string } | null;
  job_started_at: Date | null;
  job_finished_at: Date | null;
  job_results: Array<{ status: string }> | null;
}

export class ScheduleRepository {
  list(db: Executor, filter: { poolId?: string } = {}): Promise<ScheduleRow[]> {
    let q = db.selectFrom('schedules').selectAll();
    if (filter.poolId) q = q.where('pool_id', '=', filter.poolId);
    return q.orderBy('created_at').orderBy('id').execute();
  }

  get(db: Executor, id: string): Promise<ScheduleRow | undefined> {
    return db.selectFrom('schedules').selectAll().where('id', '=', id).executeTakeFirst();
  }

  getForUpdate(db: Executor, id: string): Promise<ScheduleRow | undefined> {
    return db.selectFrom('schedules').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
  }

  insert(db: Executor, row: NewSchedule): Promise<ScheduleRow> {
    return db.insertInto('schedules').values(row).returningAll().executeTakeFirstOrThrow();
  }

  update(db: Executor, id: string, set: ScheduleChanges): Promise<ScheduleRow | undefined> {
    return db
      .updateTable('schedules')
      .set({ ...set, updated_at: sql`now()` as never })
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirst();
  }

  /** Moves the pending tick forward, never back: several processes report the ticks they handled. */
  async advancePendingTick(db: Executor, id: string, pending: Date, windowEnds: Date | null): Promise<void> {
    await db
      .updateTable('schedules')
      .set({ pending_tick_at: pending, window_ends_at: windowEnds })
      .where('id', '=', id)
      .where((eb) => eb.or([eb('pending_tick_at', 'is', null), eb('pending_tick_at', '<', pending)]))
      .execute();
  }

  async delete(db: Executor, id: string): Promise<boolean> {
    const r = await db.deleteFrom('schedules').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /** Records a tick as taken; false when another process (or an earlier start) already took it. */
  async claimTick(db: Executor, run: { schedule_id: string; scheduled_for: Date; trigger: 'tick' | 'catch-up' }): Promise<boolean> {
    const r = await db
      .insertInto('schedule_runs')
      .values({ ...run, job_id: null, skipped_reason: null })
      .onConflict((oc) => oc.columns(['schedule_id', 'scheduled_for']).doNothing())
      .returning('schedule_id')
      .executeTakeFirst();
    return r !== undefined;
  }

  async setRunOutcome(db: Executor, scheduleId: string, scheduledFor: Date, set: { job_id?: string; skipped_reason?: string }): Promise<void> {
    await db.updateTable('schedule_runs').set(set).where('schedule_id', '=', scheduleId).where('scheduled_for', '=', scheduledFor).execute();
  }

  /** Runs newest first, with the state of their jobs. */
  runs(db: Executor, scheduleIds: string[], limitPerSchedule: number): Promise<ScheduleRunWithJob[]> {
    if (scheduleIds.length === 0) return Promise.resolve([]);
    return sql<ScheduleRunWithJob>`
      SELECT r.*, j.state AS job_state, j.error AS job_error, j.started_at AS job_started_at,
        j.finished_at AS job_finished_at, j.results AS job_results
      FROM (
        SELECT *, row_number() OVER (PARTITION BY schedule_id ORDER BY scheduled_for DESC) AS n
        FROM schedule_runs WHERE schedule_id = ANY(${scheduleIds}::uuid[])
      ) r LEFT JOIN jobs j ON j.id = r.job_id
      WHERE r.n <= ${limitPerSchedule}
      ORDER BY r.schedule_id, r.scheduled_for DESC`
      .execute(db)
      .then((res) => res.rows);
  }

  items(db: Executor, jobId: string): Promise<ScheduleRunItemRow[]> {
    return db.selectFrom('schedule_run_items').selectAll().where('job_id', '=', jobId).orderBy('wave').orderBy('desktop_name').execute();
  }

  /**
   * Takes desktops for a wave: only those still in one of `from` states become `refreshing`, atomically,
   * so a desktop a broker marks in use at the same moment is either taken before or left alone. Rows come
   * back whole (with the state they had): the hooks need host_id and attached to power VMs off.
   */
  async claimDesktops(db: Executor, ids: string[], from: DesktopState[]): Promise<DesktopRow[]> {
    if (ids.length === 0) return [];
    const r = await sql<DesktopRow>`
      UPDATE desktops d SET state = 'refreshing', updated_at = now()
      FROM (SELECT id, state FROM desktops WHERE id = ANY(${ids}::uuid[]) FOR UPDATE) old
      WHERE d.id = old.id AND old.state = ANY(${from}::text[])
      RETURNING d.*, old.state AS state`.execute(db);
    return r.rows;
  }

  async insertItems(db: Executor, jobId: string, wave: number, desktops: DesktopRow[]): Promise<void> {
    if (desktops.length === 0) return;
    await db
      .insertInto('schedule_run_items')
      .values(desktops.map((d) => ({ job_id: jobId, desktop_id: d.id, desktop_name: d.name, wave, previous_state: d.state, status: 'pending' as const, error: null })))
      .onConflict((oc) => oc.columns(['job_id', 'desktop_id']).doUpdateSet({ wave, status: 'pending', error: null }))
      .execute();
  }

  async finishItems(db: Executor, jobId: string, outcomes: Array<{ desktopId: string; status: 'succeeded' | 'failed' | 'skipped'; error?: string }>): Promise<void> {
    if (outcomes.length === 0) return;
    await sql`
      UPDATE schedule_run_items i SET status = o.status, error = o.error, updated_at = now()
      FROM unnest(${outcomes.map((o) => o.desktopId)}::uuid[], ${outcomes.map((o) => o.status)}::text[], ${outcomes.map((o) => o.error ?? null)}::text[]) AS o(id, status, error)
      WHERE i.job_id = ${jobId} AND i.desktop_id = o.id`.execute(db);
  }
}
