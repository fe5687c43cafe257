// node-cron is the one authority on cron expressions here: it validates them, fires the ticks, and
// computes the next ticks for listings and the catch-up window. A second parser could disagree with it
// (node-cron matches day-of-month AND day-of-week, classic cron ORs them), so none is used.
import cron, { type ScheduledTask, type TaskContext } from 'node-cron';
import { AppError } from '../../errors.ts';

/** Throws a 400 naming what is wrong with the expression (node-cron's own messages). */
export function validateCron(expression: string): void {
  const result = cron.validateDetailed(expression);
  if (result.valid) return;
  const first = result.errors[0];
  const where = first && first.field !== 'expression' ? ` (${first.field} field)` : '';
  throw new AppError('VALIDATION_FAILED', `cron: ${first?.message ?? 'invalid expression'}${where}`, {
    field: 'cron',
    errors: result.errors,
  });
}

/** Throws a 400 unless `timezone` is an IANA time zone this Node.js knows. */
export function validateTimezone(timezone: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    throw new AppError('VALIDATION_FAILED', `timezone: "${timezone}" is not a known IANA time zone (for example Europe/Paris or UTC)`, { field: 'timezone' });
  }
}

/** The next `count` ticks after now, as node-cron will fire them. */
export function nextTicks(expression: string, timezone: string, count: number): Date[] {
  const task = cron.createTask(expression, () => {}, { timezone });
  try {
    return task.getNextRuns(count);
  } finally {
    void task.destroy();
  }
}

export interface ArmedTask {
  /** The next tick node-cron will fire, or null when stopped. */
  nextRun(): Date | null;
  stop(): void;
}

/**
 * Fires `onTick(slot)` at each tick, `slot` being the scheduled instant (whole seconds), not the moment
 * the timer happened to run. A tick is still fired when the process is late by less than both
 * `lateToleranceMs` and the gap to the following tick (node-cron's rule); later ones are missed.
 */
export function armCron(
  expression: string,
  timezone: string,
  name: string,
  onTick: (slot: Date) => void,
  lateToleranceMs = 30_000,
): ArmedTask {
  const task: ScheduledTask = cron.createTask(expression, (ctx: TaskContext) => onTick(ctx.date), {
    timezone,
    name,
    missedExecutionTolerance: lateToleranceMs,
    suppressMissedWarning: true,
  });
  void task.start();
  return {
    nextRun: () => task.getNextRun(),
    stop: () => void task.destroy(),
  };
}
