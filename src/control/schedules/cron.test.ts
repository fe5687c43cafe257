import { describe, expect, it } from 'vitest';
import { AppError } from '../../errors.ts';
import { armCron, nextTicks, validateCron, validateTimezone } from './cron.ts';

function errorOf(fn: () => void): AppError {
  try {
    fn();
  } catch (err) {
    return err as AppError;
  }
  throw new Error('expected an error');
}

describe('cron helpers', () => {
  it('accepts five- and six-field expressions and nicknames', () => {
    for (const e of ['* * * * * *', '0 3 * * *', '*/15 0 3 * * MON-FRI', '@daily', '0 0 12 L * *']) expect(() => validateCron(e)).not.toThrow();
  });

  it('names the field and the problem of an invalid expression', () => {
    const seconds = errorOf(() => validateCron('61 * * * * *'));
    expect(seconds.code).toBe('VALIDATION_FAILED');
    expect(seconds.message).toBe('cron: 61 is a invalid expression for second (second field)');
    expect((seconds.details as { field: string }).field).toBe('cron');
    expect(errorOf(() => validateCron('* * *')).message).toBe('cron: expected 5 or 6 fields but got 3');
    expect(errorOf(() => validateCron('0 0 31 2 *')).message).toMatch(/^cron: .*impossible day of month.*\(dayOfMonth field\)$/);
  });

  it('refuses unknown time zones and accepts IANA ones', () => {
    expect(() => validateTimezone('Europe/Paris')).not.toThrow();
    expect(() => validateTimezone('UTC')).not.toThrow();
    expect(errorOf(() => validateTimezone('Europe/Atlantis')).message).toMatch(/^timezone: "Europe\/Atlantis" is not a known IANA time zone/);
  });

  it('computes the next ticks on the wall clock of the time zone', () => {
    const ticks = nextTicks('0 30 2 * * *', 'America/New_York', 3);
    expect(ticks).toHaveLength(3);
    const fmt = new Intl.DateTimeFormat('en-GB', { timeZone: 'America/New_York', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
    for (const t of ticks) expect(fmt.format(t)).toBe('02:30:00');
    expect(ticks[0].getTime()).toBeGreaterThan(Date.now());
    for (let i = 1; i < ticks.length; i++) expect(ticks[i].getTime()).toBeGreaterThan(ticks[i - 1].getTime());
  });

  it('fires each tick with its scheduled instant, on whole seconds, until stopped', async () => {
    const slots: Date[] = [];
    const fired: number[] = [];
    const task = armCron('* * * * * *', 'UTC', 'cron-test', (slot) => {
      slots.push(slot);
      fired.push(Date.now());
    });
    const expected = task.nextRun()!;
    await new Promise((r) => setTimeout(r, 2_600));
    task.stop();
    const count = slots.length;
    await new Promise((r) => setTimeout(r, 1_200));
    expect(slots.length).toBe(count);
    expect(count).toBeGreaterThanOrEqual(2);
    expect(slots[0].getTime()).toBe(expected.getTime());
    for (let i = 0; i < slots.length; i++) {
      expect(slots[i].getTime() % 1000).toBe(0);
      if (i > 0) expect(slots[i].getTime() - slots[i - 1].getTime()).toBe(1000);
      expect(fired[i] - slots[i].getTime()).toBeGreaterThanOrEqual(0);
      expect(fired[i] - slots[i].getTime()).toBeLessThan(1000);
    }
  });
});
