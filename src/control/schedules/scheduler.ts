// Arms a node-cron task for every enabled schedule in this process and keeps them in step with the
// database (other processes create, change and delete schedules too). Every process arms every schedule;
// ScheduleService.fire makes sure each tick becomes one run however many of them fire it.
//
// Missed runs: each schedule row keeps the next tick no process has handled yet (pending_tick_at) and the
// tick after it (window_ends_at). When a process arms a schedule (at start-up, or when it appears or
// changes) and the pending tick is already past, no process was there to fire it: one run is made up now
// ('catch-up'), however many ticks were missed (the last missed tick is always still inside its window,
// which lasts until the tick after it); a `schedule.missed` event says when several were.
import type { ScheduleRow } from '../../db/schema.ts';
import { armCron, type ArmedTask } from './cron.ts';
import type { ScheduleService } from './schedule.service.ts';

export interface SchedulerOptions {
  /** How often the schedules table is read again for changes made by other processes. */
  syncIntervalMs?: number;
  log?: { info(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
  emit?: (type: string, data: Record<string, unknown>) => void;
}

interface Armed {
  task: ArmedTask;
  /** What the task was armed from: a change re-arms it. */
  version: string;
}

const noopLog = { info() {}, error() {} };

export class Scheduler {
  #service: ScheduleService;
  #armed = new Map<string, Armed>();
  #timer: NodeJS.Timeout | undefined;
  #syncing: Promise<void> | undefined;
  #syncAgain = false;
  #stopped = true;
  readonly #inFlight = new Set<Promise<void>>();
  #options: Required<SchedulerOptions>;

  constructor(service: ScheduleService, options: SchedulerOptions = {}) {
    this.#service = service;
    this.#options = { syncIntervalMs: options.syncIntervalMs ?? 2_000, log: options.log ?? noopLog, emit: options.emit ?? (() => {}) };
  }

  async start(): Promise<void> {
    this.#stopped = false;
    await this.sync();
    this.#timer = setInterval(() => void this.sync(), this.#options.syncIntervalMs);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#syncing;
    for (const a of this.#armed.values()) a.task.stop();
    this.#armed.clear();
    // A tick already firing finishes its transaction before the database may be closed.
    await Promise.allSettled([...this.#inFlight]);
  }

  /** Re-reads the schedules and arms, re-arms or disarms; concurrent calls coalesce. */
  sync(): Promise<void> {
    if (this.#syncing) {
      this.#syncAgain = true;
      return this.#syncing;
    }
    this.#syncing = (async () => {
      try {
        do {
          this.#syncAgain = false;
          await this.#syncOnce();
        } while (this.#syncAgain && !this.#stopped);
      } catch (err) {
        this.#options.log.error({ err }, 'reading schedules failed');
      } finally {
        this.#syncing = undefined;
      }
    })();
    return this.#syncing;
  }

  async #syncOnce(): Promise<void> {
    if (this.#stopped) return;
    const rows = await this.#service.rows();
    const wanted = new Map(rows.filter((r) => r.enabled).map((r) => [r.id, r]));
    for (const [id, armed] of this.#armed) {
      const row = wanted.get(id);
      if (!row || versionOf(row) !== armed.version) {
        armed.task.stop();
        this.#armed.delete(id);
      }
    }
    for (const row of wanted.values()) {
      if (this.#stopped) return;
      if (this.#armed.has(row.id)) continue;
      const task = armCron(row.cron, row.timezone, `thicket-schedule-${row.id}`, (slot) => void this.#tick(row, slot));
      this.#armed.set(row.id, { task, version: versionOf(row) });
      await this.#catchUp(row);
    }
  }

  async #catchUp(row: ScheduleRow): Promise<void> {
    const now = Date.now();
    if (!row.pending_tick_at || new Date(row.pending_tick_at).getTime() > now) return;
    const missed = new Date(row.pending_tick_at);
    try {
      // The window of the first missed tick ends at the following tick. When that one has passed too,
      // several ticks were missed, and the last of them is still inside its own window (its following tick
      // has not come, or this process would have fired it): so one run is made up whenever ticks were
      // missed, never more. The claim stays keyed by the first missed tick, which every process reads
      // alike, so the made-up run happens once however many processes start.
      const several = Boolean(row.window_ends_at && now >= new Date(row.window_ends_at).getTime());
      const r = await this.#service.fire(row.id, missed, 'catch-up', row);
      // Said once: by the process whose claim of the made-up run won.
      if (several && r.outcome !== 'taken' && r.outcome !== 'gone') this.#options.emit('schedule.missed', { scheduleId: row.id, poolId: row.pool_id, since: missed.toISOString(), madeUp: r.outcome });
      this.#options.log.info({ scheduleId: row.id, firstMissed: missed.toISOString(), severalMissed: several, outcome: r.outcome, jobId: r.jobId }, 'missed scheduled run made up');
      await this.#service.advance(row);
    } catch (err) {
      this.#options.log.error({ err, scheduleId: row.id }, 'making up a missed run failed');
    }
  }

  async #tick(row: ScheduleRow, slot: Date): Promise<void> {
    if (this.#stopped) return;
    const run = this.#fireTick(row, slot);
    this.#inFlight.add(run);
    try {
      await run;
    } finally {
      this.#inFlight.delete(run);
    }
  }

  async #fireTick(row: ScheduleRow, slot: Date): Promise<void> {
    try {
      const r = await this.#service.fire(row.id, slot, 'tick', row);
      if (r.outcome === 'queued') this.#options.log.info({ scheduleId: row.id, scheduledFor: slot.toISOString(), jobId: r.jobId }, 'scheduled run queued');
      if (r.outcome !== 'gone') await this.#service.advance(row);
    } catch (err) {
      this.#options.log.error({ err, scheduleId: row.id, scheduledFor: slot.toISOString() }, 'firing a scheduled run failed');
    }
  }
}

function versionOf(row: ScheduleRow): string {
  return `${row.cron}|${row.timezone}|${new Date(row.updated_at).getTime()}`;
}
