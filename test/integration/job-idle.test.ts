// A job that waits through ctx.idle() gives its runner slot to other jobs meanwhile, and is still
// cancelled promptly while it waits.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventBus } from '../../src/control/events/event-bus.ts';
import { JobRunner } from '../../src/control/jobs/job-runner.ts';
import type { JobContext, JobHandler } from '../../src/control/jobs/job-types.ts';
import { JobRepository } from '../../src/db/repositories/job.repository.ts';
import type { DatabaseHandle } from '../../src/db/database.ts';
import { DATABASE_KINDS, openTestDatabase } from '../helpers/databases.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const repo = new JobRepository();

class Handler implements JobHandler {
  readonly kind: string;
  body: (ctx: JobContext) => Promise<void>;
  constructor(kind: string, body: (ctx: JobContext) => Promise<void>) {
    this.kind = kind;
    this.body = body;
  }
  run(ctx: JobContext): Promise<void> {
    return this.body(ctx);
  }
  async rollback(): Promise<void> {}
}

describe.each(DATABASE_KINDS)('JobRunner idle jobs (%s)', (kind) => {
  let handle: DatabaseHandle & { drop(): Promise<void> };
  let runner: JobRunner;
  let release = false;
  const finishedWhileWaiting: string[] = [];

  beforeAll(async () => {
    handle = await openTestDatabase(kind);
    runner = new JobRunner(handle.db, new EventBus(handle.db), { concurrency: 1, pollIntervalMs: 50, heartbeatIntervalMs: 50 });
    runner.register(
      new Handler('test.waiter', async (ctx) => {
        for (let i = 0; i < 500 && !release; i++) await ctx.idle(20);
        if (!release) throw new Error('never released');
      }),
    );
    runner.register(
      new Handler('test.quick', async (ctx) => {
        if (!release) finishedWhileWaiting.push(ctx.job.id);
      }),
    );
    await runner.start({ requeueAllRunning: true });
  });

  afterAll(async () => {
    await runner?.stop();
    await handle?.drop();
  });

  async function state(id: string, timeoutMs = 10_000, until: (s: string) => boolean = (s) => s !== 'queued' && s !== 'running'): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 2_000 && Date.now() < deadline; i++) {
      const row = await repo.get(handle.db, id);
      if (row && until(row.state)) return row.state;
      await sleep(20);
    }
    throw new Error(`job ${id} did not reach the state in time`);
  }

  it('runs other jobs on a runner of concurrency 1 while a job waits in ctx.idle', async () => {
    const waiter = (await repo.insert(handle.db, { id: randomUUID(), kind: 'test.waiter', resource_id: null, payload: {} })).id;
    await state(waiter, 10_000, (s) => s === 'running');
    const quick = [];
    for (let i = 0; i < 3; i++) quick.push((await repo.insert(handle.db, { id: randomUUID(), kind: 'test.quick', resource_id: null, payload: {} })).id);
    runner.kick();
    for (const id of quick) expect(await state(id)).toBe('succeeded');
    expect(finishedWhileWaiting.sort()).toEqual([...quick].sort());
    expect((await repo.get(handle.db, waiter))!.state).toBe('running');
    release = true;
    expect(await state(waiter)).toBe('succeeded');
  });

  it('cancels a job while it waits in ctx.idle', async () => {
    release = false;
    const waiter = (await repo.insert(handle.db, { id: randomUUID(), kind: 'test.waiter', resource_id: null, payload: {} })).id;
    await state(waiter, 10_000, (s) => s === 'running');
    const asked = Date.now();
    await runner.cancel(waiter);
    expect(await state(waiter)).toBe('cancelled');
    expect(Date.now() - asked).toBeLessThan(2_000);
    release = true;
  });
});
