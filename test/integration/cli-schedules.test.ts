// `thicket schedules …` against a running Thicket: create, list (table and --json), update, disable,
// enable, run history and delete, and the exit codes of bad input.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliRunner } from '../helpers/cli.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('thicket schedules CLI', () => {
  let t: TestThicket;
  let poolId: string;

  const { cli, json } = cliRunner(() => t);

  beforeAll(async () => {
    t = await startTestThicket('pglite');
    const pools = (await t.json('GET', '/api/v1/storage-pools')).body as any[];
    const img = path.join(t.dataDir, 'g.img');
    writeFileSync(img, Buffer.alloc(1024 * 1024, 5));
    const tpl = (await t.json('POST', '/api/v1/templates', { name: 'g' })).body;
    const v = (await t.json('POST', `/api/v1/templates/${tpl.id}/versions`, { sourcePath: img, format: 'raw' })).body;
    const r = (await t.json('POST', '/api/v1/replicas', { templateVersionId: v.id, storagePoolId: pools.find((p) => p.name === 'capacity').id })).body;
    expect((await t.waitForJob(r.job.id)).state).toBe('succeeded');
    const pool = (await t.json('POST', '/api/v1/desktop-pools', { name: 'cli-sched', replicaId: r.replica.id, storagePoolId: pools.find((p) => p.name === 'fast').id, size: 6, namePattern: 'c-{n}', hostIds: [] })).body;
    expect((await t.waitForJob(pool.job.id)).state).toBe('succeeded');
    poolId = pool.pool.id;
  });
  afterAll(async () => {
    await t?.destroy();
  });

  it('lists the schedules commands in the help', async () => {
    const help = await cli('--help');
    for (const c of ['list', 'create', 'update', 'enable', 'disable', 'delete', 'runs']) expect(help.out).toContain(`thicket schedules ${c}`);
    expect((await cli('schedules', 'create', '--help')).out).toMatch(/usage: thicket schedules create POOL_ID --cron/);
  });

  it('creates, lists, updates, disables, enables, shows runs of and deletes a schedule', async () => {
    const s = await json('schedules', 'create', poolId, '--cron', '* * * * * *', '--action', 'refresh', '--wave-size', '4', '--in-use', 'wait', '--wait-deadline', '2', '--timezone', 'Europe/Berlin');
    expect(s).toMatchObject({ poolId, cron: '* * * * * *', action: 'refresh', waveSize: 4, inUse: 'wait', waitDeadlineMinutes: 2, timezone: 'Europe/Berlin', enabled: true });
    expect(Date.parse(s.nextRunAt) - Date.now()).toBeLessThanOrEqual(1000);
    // Every second: wait (bounded) for the first run, then stop the ticks.
    let history: any[] = [];
    for (let i = 0; i < 100 && !history.some((r) => r.jobId); i++) {
      await sleep(100);
      history = await json('schedules', 'runs', poolId, s.id);
    }
    expect((await json('schedules', 'disable', poolId, s.id)).enabled).toBe(false);
    const ran = history.find((r) => r.jobId);
    expect(ran).toMatchObject({ trigger: 'tick' });
    expect((await t.waitForJob(ran.jobId)).state).toBe('succeeded');
    const table = await cli('schedules', 'runs', poolId, s.id);
    expect(table.out).toMatch(/^SCHEDULEDFOR\s+TRIGGER\s+STATE\s+JOBID/);
    expect(table.out).toContain(ran.jobId);
    expect(table.out).toContain('6 ok, 0 failed, 0 skipped');

    const listed = await json('schedules', 'list');
    expect(listed.map((x: any) => x.id)).toEqual([s.id]);
    expect(listed[0]).toMatchObject({ enabled: false, nextRunAt: null });
    expect(listed[0].lastRun.jobId).toBeTruthy();
    expect((await json('schedules', 'list', '--pool', poolId)).map((x: any) => x.id)).toEqual([s.id]);
    const human = await cli('schedules', 'list');
    expect(human.out).toMatch(/^ID\s+POOLID\s+CRON\s+TIMEZONE\s+ACTION/);
    expect(human.out).toContain('Europe/Berlin');

    const updated = await json('schedules', 'update', poolId, s.id, '--cron', '0 0 3 * * *', '--in-use', 'force', '--wave-size', '2');
    expect(updated).toMatchObject({ cron: '0 0 3 * * *', inUse: 'force', waitDeadlineMinutes: null, waveSize: 2, enabled: false });
    const enabled = await json('schedules', 'enable', poolId, s.id);
    expect(enabled.enabled).toBe(true);
    const berlin = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date(enabled.nextRunAt));
    expect(berlin).toBe('03:00');
    expect((await json('schedules', 'delete', poolId, s.id)).deleted).toBe(s.id);
    expect(await json('schedules', 'list')).toEqual([]);
  }, 30_000);

  it('exits 1 with the API error for a bad cron expression, and 2 for missing options', async () => {
    const bad = await cli('schedules', 'create', poolId, '--cron', '* * * * * 9', '--action', 'refresh', '--wave-size', '4', '--json');
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.out).error).toMatchObject({ code: 'VALIDATION_FAILED' });
    expect(bad.err).toMatch(/VALIDATION_FAILED: cron: .*9.*dayOfWeek/);
    const missing = await cli('schedules', 'create', poolId, '--action', 'refresh');
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/^usage: thicket schedules create/);
    const unknown = await cli('schedules', 'disable', poolId, '00000000-0000-4000-8000-000000000000');
    expect(unknown.code).toBe(1);
    expect(unknown.err).toContain('SCHEDULE_NOT_FOUND');
  });
});
