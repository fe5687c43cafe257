// Scheduled refresh and recompose end to end through the API on both databases: every-second cron
// schedules on a pool of 100 desktops, rolling waves, the in-use policies, the failure threshold (a
// replica whose file is gone), recompose-latest promoting the newest version first, and missed runs
// made up once after a restart.
import { randomBytes } from 'node:crypto';
import { unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const MiB = 1024 * 1024;
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:dddddddd-0000-4000-8000-000000000004';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(DATABASE_KINDS)('schedules (%s)', (kind) => {
  let t: TestThicket;
  let templateId: string;
  let replicaV1: string;
  let capacityPool: string;
  let capacityPath: string;
  let fastPool: string;
  let hostId: string;
  let poolId: string;
  let ws: WebSocket;
  const events: any[] = [];

  async function addVersion(image: Buffer, file: string): Promise<string> {
    const p = path.join(t.dataDir, file);
    writeFileSync(p, image);
    const v = await t.json('POST', `/api/v1/templates/${templateId}/versions`, { sourcePath: p, format: 'raw' });
    expect(v.status).toBe(201);
    return v.body.id;
  }

  async function promote(versionId: string): Promise<string> {
    const r = await t.json('POST', '/api/v1/replicas', { templateVersionId: versionId, storagePoolId: capacityPool });
    expect((await t.waitForJob(r.body.job.id)).state).toBe('succeeded');
    return r.body.replica.id;
  }

  async function setState(name: string, state: 'in-use' | 'available'): Promise<void> {
    const r = await t.json('POST', `/api/v1/desktop-pools/${poolId}/desktops/${name}/state`, { state });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  }

  async function desktops(): Promise<Map<string, any>> {
    return new Map(((await t.json('GET', `/api/v1/desktop-pools/${poolId}/desktops`)).body as any[]).map((d) => [d.name, d]));
  }

  async function cloneReplicas(): Promise<Map<string, string>> {
    const clones = (await t.json('GET', '/api/v1/clones')).body as any[];
    return new Map(clones.map((c) => [c.id, c.replicaId]));
  }

  async function createSchedule(body: Record<string, unknown>): Promise<any> {
    const r = await t.json('POST', `/api/v1/desktop-pools/${poolId}/schedules`, body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body;
  }

  async function disable(scheduleId: string): Promise<void> {
    expect((await t.json('PATCH', `/api/v1/desktop-pools/${poolId}/schedules/${scheduleId}`, { enabled: false })).status).toBe(200);
  }

  async function runs(scheduleId: string): Promise<any[]> {
    return (await t.json('GET', `/api/v1/desktop-pools/${poolId}/schedules/${scheduleId}/runs`)).body;
  }

  /** Waits (bounded) until the schedule has a run with a job, and returns that job once finished. */
  async function firstRunJob(scheduleId: string, timeoutMs = 15_000): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
      const withJob = (await runs(scheduleId)).filter((r) => r.jobId).at(-1);
      if (withJob) return t.waitForJob(withJob.jobId, 60_000);
      await sleep(50);
    }
    throw new Error('no scheduled run was queued in time');
  }

  function wavesOf(jobId: string): any[] {
    return events.filter((e) => e.type === 'schedule.wave' && e.jobId === jobId).sort((a, b) => a.wave - b.wave);
  }

  /** Every event so far, replayed over a new WebSocket (the first one closes with a restart). */
  async function replayEvents(): Promise<any[]> {
    const got: any[] = [];
    const socket = new WebSocket(`${t.url.replace('http', 'ws')}/api/v1/events?token=${t.token}&since=0`);
    socket.on('message', (m) => got.push(JSON.parse(String(m))));
    await new Promise((r) => socket.once('open', r));
    await sleep(500);
    socket.close();
    return got;
  }

  async function waitIdle(): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
      const active = (await t.json('GET', `/api/v1/jobs?state=queued,running&resourceId=${poolId}`)).body as any[];
      if (active.length === 0) return;
      await sleep(50);
    }
    throw new Error('the pool did not become idle');
  }

  beforeAll(async () => {
    t = await startTestThicket(kind);
    const pools = (await t.json('GET', '/api/v1/storage-pools')).body as Array<{ id: string; name: string; path: string }>;
    fastPool = pools.find((p) => p.name === 'fast')!.id;
    capacityPool = pools.find((p) => p.name === 'capacity')!.id;
    capacityPath = pools.find((p) => p.name === 'capacity')!.path;
    templateId = (await t.json('POST', '/api/v1/templates', { name: 'sched' })).body.id;
    replicaV1 = await promote(await addVersion(randomBytes(MiB), 'v1.img'));
    hostId = (await t.json('POST', '/api/v1/hosts', { name: 'hv', nqn: HOSTNQN })).body.id;
    const res = await t.json('POST', '/api/v1/desktop-pools', { name: 'sched-pool', replicaId: replicaV1, storagePoolId: fastPool, size: 100, namePattern: 'd-{n:000}', hostIds: [hostId] });
    expect(res.status).toBe(202);
    poolId = res.body.pool.id;
    expect((await t.waitForJob(res.body.job.id, 60_000)).state).toBe('succeeded');
    ws = new WebSocket(`${t.url.replace('http', 'ws')}/api/v1/events?token=${t.token}&since=0`);
    ws.on('message', (m) => events.push(JSON.parse(String(m))));
    await new Promise((r) => ws.once('open', r));
  }, 120_000);

  afterAll(async () => {
    ws?.close();
    await t?.destroy();
  });

  it('refuses invalid cron expressions, time zones and policies with a 400 naming the problem', async () => {
    const base = { cron: '* * * * * *', action: 'refresh', waveSize: 10, inUse: 'skip', enabled: false };
    let r = await t.json('POST', `/api/v1/desktop-pools/${poolId}/schedules`, { ...base, cron: '61 * * * * *' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('VALIDATION_FAILED');
    expect(r.body.error.message).toMatch(/^cron: .*61.*second/);
    r = await t.json('POST', `/api/v1/desktop-pools/${poolId}/schedules`, { ...base, cron: 'every day' });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/^cron: expected 5 or 6 fields but got 2/);
    r = await t.json('POST', `/api/v1/desktop-pools/${poolId}/schedules`, { ...base, timezone: 'Mars/Olympus_Mons' });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/^timezone: "Mars\/Olympus_Mons" is not a known IANA time zone/);
    r = await t.json('POST', `/api/v1/desktop-pools/${poolId}/schedules`, { ...base, inUse: 'wait' });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toBe('waitDeadlineMinutes: is required when inUse is "wait"');
    r = await t.json('POST', `/api/v1/desktop-pools/${poolId}/schedules`, { ...base, action: 'reboot' });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/^action: must be one of refresh, recompose-latest/);
    r = await t.json('POST', `/api/v1/desktop-pools/${poolId}/schedules`, { ...base, waveSize: 0 });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/^waveSize:/);
    r = await t.json('POST', `/api/v1/desktop-pools/00000000-0000-4000-8000-000000000000/schedules`, base);
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('DESKTOP_POOL_NOT_FOUND');
    r = await t.json('GET', `/api/v1/desktop-pools/${poolId}/schedules/00000000-0000-4000-8000-000000000000`);
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('SCHEDULE_NOT_FOUND');
    expect((await t.json('GET', '/api/v1/schedules')).body).toEqual([]);
  });

  it('creates, lists with nextRunAt in the time zone, updates, disables and deletes a schedule', async () => {
    const s = await createSchedule({ cron: '0 30 2 * * *', timezone: 'Europe/Paris', action: 'refresh', waveSize: 25, inUse: 'skip', enabled: true });
    expect(s).toMatchObject({ poolId, cron: '0 30 2 * * *', timezone: 'Europe/Paris', action: 'refresh', waveSize: 25, inUse: 'skip', waitDeadlineMinutes: null, maxFailuresPerWave: 0, enabled: true, lastRun: null });
    // 02:30 on the wall clock in Paris, within the next day.
    const next = new Date(s.nextRunAt);
    const paris = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Paris', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).format(next);
    expect(paris).toBe('02:30:00');
    expect(next.getTime() - Date.now()).toBeGreaterThan(0);
    expect(next.getTime() - Date.now()).toBeLessThanOrEqual(25 * 3600_000);
    const all = (await t.json('GET', '/api/v1/schedules')).body;
    expect(all.map((x: any) => x.id)).toEqual([s.id]);
    const patched = await t.json('PATCH', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`, { inUse: 'wait', waitDeadlineMinutes: 30, waveSize: 5 });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ inUse: 'wait', waitDeadlineMinutes: 30, waveSize: 5, enabled: true });
    const bad = await t.json('PATCH', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`, { cron: '* * * 13 *' });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/^cron: .*13.*month/);
    await disable(s.id);
    const got = (await t.json('GET', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`)).body;
    expect(got).toMatchObject({ enabled: false, nextRunAt: null });
    expect((await t.json('DELETE', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`)).status).toBe(204);
    expect((await t.json('GET', `/api/v1/desktop-pools/${poolId}/schedules`)).body).toEqual([]);
  });

  it('runs an every-second refresh on its ticks in waves of at most waveSize, skipping desktops in use', async () => {
    for (const n of ['d-003', 'd-050', 'd-099']) await setState(n, 'in-use');
    const s = await createSchedule({ cron: '* * * * * *', action: 'refresh', waveSize: 7, inUse: 'skip', enabled: true });
    const deadline = Date.now() + 20_000;
    let list: any[] = [];
    for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
      list = await runs(s.id);
      if (list.filter((r) => r.jobId).length >= 2 && list.length >= 4) break;
      await sleep(100);
    }
    await disable(s.id);
    await waitIdle();
    list = await runs(s.id);
    // One run per tick, on whole seconds, one second apart; each queued run starts within a second.
    const ticks = list.map((r) => Date.parse(r.scheduledFor)).sort((a, b) => a - b);
    expect(new Set(ticks).size).toBe(ticks.length);
    for (const tick of ticks) expect(tick % 1000).toBe(0);
    for (let i = 1; i < ticks.length; i++) expect(ticks[i] - ticks[i - 1]).toBe(1000);
    const withJobs = list.filter((r) => r.jobId);
    expect(withJobs.length).toBeGreaterThanOrEqual(2);
    for (const r of list.filter((x) => !x.jobId)) expect(r.skippedReason).toMatch(/scheduled-run job in progress/);
    for (const r of withJobs) {
      const job = await t.waitForJob(r.jobId);
      expect(job.state).toBe('succeeded');
      expect(Date.parse(job.startedAt) - Date.parse(r.scheduledFor)).toBeLessThan(1000);
      expect(Date.parse(job.createdAt) - Date.parse(r.scheduledFor)).toBeLessThan(1000);
      const results = new Map(job.results.map((x: any) => [x.item, x]));
      expect(results.size).toBe(100);
      for (const n of ['d-003', 'd-050', 'd-099']) expect(results.get(n)).toEqual({ item: n, status: 'skipped', error: 'in use' });
      expect(job.results.filter((x: any) => x.status === 'succeeded').length).toBe(97);
    }
    await sleep(300); // the last events reach the WebSocket
    for (const r of withJobs) {
      const waves = wavesOf(r.jobId);
      expect(waves.length).toBe(Math.ceil(97 / 7));
      for (const w of waves) expect(w.desktops.length).toBeLessThanOrEqual(7);
      const touched = waves.flatMap((w) => w.desktops);
      expect(new Set(touched).size).toBe(97);
      for (const n of ['d-003', 'd-050', 'd-099']) expect(touched).not.toContain(n);
    }
    const after = await desktops();
    expect([...after.values()].filter((d) => d.state === 'in-use').map((d) => d.name)).toEqual(['d-003', 'd-050', 'd-099']);
    expect([...after.values()].filter((d) => d.state === 'available').length).toBe(97);
    const listed = (await t.json('GET', '/api/v1/schedules')).body.find((x: any) => x.id === s.id);
    expect(listed.lastRun.scheduledFor).toBe(list[0].scheduledFor);
    await t.json('DELETE', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`);
  }, 60_000);

  it('waits for desktops in use until they are released or the deadline passes', async () => {
    // d-003, d-050 and d-099 are still in use from the previous test.
    const s = await createSchedule({ cron: '* * * * * *', action: 'refresh', waveSize: 10, inUse: 'wait', waitDeadlineMinutes: 0.08, enabled: true });
    const deadline = Date.now() + 15_000;
    let jobId: string | undefined;
    for (let i = 0; i < 1000 && Date.now() < deadline && !jobId; i++) {
      jobId = (await runs(s.id)).find((r) => r.jobId)?.jobId;
      if (!jobId) await sleep(50);
    }
    await disable(s.id);
    expect(jobId).toBeDefined();
    // The 97 free desktops are done first; the run then waits, and picks up d-050 once it is released.
    for (let i = 0; i < 400; i++) {
      const job = (await t.json('GET', `/api/v1/jobs/${jobId}`)).body;
      if (job.progress.done >= 97 || job.state !== 'running') break;
      await sleep(25);
    }
    expect((await t.json('GET', `/api/v1/jobs/${jobId}`)).body.state).toBe('running');
    await setState('d-050', 'available');
    const job = await t.waitForJob(jobId!, 30_000);
    expect(job.state).toBe('succeeded');
    const results = new Map(job.results.map((x: any) => [x.item, x]));
    expect(results.get('d-050')).toEqual({ item: 'd-050', status: 'succeeded' });
    expect(results.get('d-003')).toEqual({ item: 'd-003', status: 'skipped', error: 'still in use at the wait deadline' });
    expect(results.get('d-099')).toEqual({ item: 'd-099', status: 'skipped', error: 'still in use at the wait deadline' });
    expect(job.results.filter((x: any) => x.status === 'succeeded').length).toBe(98);
    // It gave up at the deadline (0.08 min = 4.8 s after the tick), not before.
    expect(Date.parse(job.finishedAt) - Date.parse(job.payload.scheduledFor)).toBeGreaterThanOrEqual(4_800);
    await sleep(300);
    const waves = wavesOf(jobId!);
    for (const w of waves) expect(w.desktops.length).toBeLessThanOrEqual(10);
    expect(waves.at(-1).desktops).toEqual(['d-050']);
    await waitIdle();
    await t.json('DELETE', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`);
  }, 60_000);

  it('forces desktops in use: resets them, keeps them in use and asks for their VMs to be restarted', async () => {
    const s = await createSchedule({ cron: '* * * * * *', action: 'refresh', waveSize: 30, inUse: 'force', enabled: true });
    const job = await firstRunJob(s.id);
    await disable(s.id);
    expect(job.state).toBe('succeeded');
    expect(job.results.length).toBe(100);
    expect(job.results.every((x: any) => x.status === 'succeeded')).toBe(true);
    await sleep(300);
    const restarts = events.filter((e) => e.type === 'desktop.restart-requested' && e.poolId === poolId).map((e) => e.name).sort();
    expect(restarts).toEqual(['d-003', 'd-099']);
    const waves = wavesOf(job.id);
    expect(waves.map((w) => w.desktops.length)).toEqual([30, 30, 30, 10]);
    const after = await desktops();
    expect(after.get('d-003').state).toBe('in-use');
    expect(after.get('d-099').state).toBe('in-use');
    await waitIdle();
    await t.json('DELETE', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`);
    for (const n of ['d-003', 'd-099']) await setState(n, 'available');
  }, 60_000);

  it('stops a recompose whose wave fails beyond the threshold (replica file gone) and touches no other desktop', async () => {
    const v2 = await addVersion(randomBytes(MiB), 'v2.img');
    const replicaV2 = await promote(v2);
    // The newest replica is broken on disk: every desktop moved to it fails.
    unlinkSync(path.join(capacityPath, 'replicas', `${replicaV2}.img`));
    const s = await createSchedule({ cron: '* * * * * *', action: 'recompose-latest', waveSize: 10, inUse: 'skip', maxFailuresPerWave: 2, enabled: true });
    const job = await firstRunJob(s.id);
    await disable(s.id);
    expect(job.state).toBe('failed');
    expect(job.error.code).toBe('SCHEDULE_RUN_STOPPED');
    expect(job.error.message).toMatch(/^wave 1: 10 of 10 desktops failed \(more than maxFailuresPerWave = 2\); the run stopped$/);
    expect(job.payload.replicaId).toBe(replicaV2);
    const after = await desktops();
    // Every desktop has a result: the wave's ten failed, with why; the others were never reached.
    expect(job.results.length).toBe(after.size);
    const failedResults = job.results.filter((x: any) => x.status === 'failed');
    expect(failedResults).toHaveLength(10);
    for (const r of failedResults) expect(r.error).toMatch(/^recompose failed: ./);
    const notReached = job.results.filter((x: any) => x.status === 'skipped');
    expect(notReached).toHaveLength(after.size - 10);
    for (const r of notReached) expect(r.error).toMatch(/^not reached: the run stopped/);
    const failedNames = failedResults.map((x: any) => x.item);
    const replicas = await cloneReplicas();
    for (const d of after.values()) {
      expect(replicas.get(d.cloneId)).toBe(replicaV1);
      expect(d.state).toBe(failedNames.includes(d.name) ? 'failed' : 'available');
    }
    expect((await t.json('GET', `/api/v1/desktop-pools/${poolId}`)).body.replicaId).toBe(replicaV1);
    const listed = (await t.json('GET', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`)).body;
    expect(listed.lastRun).toMatchObject({ state: 'failed', error: { code: 'SCHEDULE_RUN_STOPPED' }, desktops: { succeeded: 0, failed: 10, skipped: after.size - 10 } });
    await waitIdle();
    await t.json('DELETE', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`);
  }, 60_000);

  it('recompose-latest promotes the newest template version first, then moves every desktop to it', async () => {
    const v3 = await addVersion(randomBytes(2 * MiB), 'v3.img');
    const s = await createSchedule({ cron: '* * * * * *', action: 'recompose-latest', waveSize: 40, inUse: 'skip', enabled: true });
    const job = await firstRunJob(s.id, 20_000);
    await disable(s.id);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    const promoted = ((await t.json('GET', `/api/v1/replicas?templateId=${templateId}`)).body as any[]).find((r) => r.templateVersionId === v3);
    expect(promoted).toMatchObject({ state: 'ready', storagePoolId: capacityPool });
    expect(job.payload.replicaId).toBe(promoted.id);
    expect(job.results.filter((x: any) => x.status === 'succeeded').length).toBe(100);
    const replicas = await cloneReplicas();
    const after = await desktops();
    for (const d of after.values()) {
      expect(replicas.get(d.cloneId)).toBe(promoted.id);
      expect(d.state).toBe('available');
    }
    expect((await t.json('GET', `/api/v1/desktop-pools/${poolId}`)).body.replicaId).toBe(promoted.id);
    await waitIdle();
    await t.json('DELETE', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`);
  }, 90_000);

  it('after a restart, makes up missed ticks with one run: the last missed tick is always inside its window', async () => {
    // Every 6 seconds: the window of a missed tick lasts until the next one, 6 s later.
    const s = await createSchedule({ cron: '*/6 * * * * *', action: 'refresh', waveSize: 50, inUse: 'skip', enabled: true });
    const missed = Date.parse(s.nextRunAt);
    await t.stop();
    await sleep(Math.max(0, missed - Date.now()) + 300);
    await t.restart();
    expect(Date.now()).toBeLessThan(missed + 6000);
    let list: any[] = [];
    for (let i = 0; i < 200; i++) {
      list = await runs(s.id);
      if (list.length) break;
      await sleep(25);
    }
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ scheduledFor: new Date(missed).toISOString(), trigger: 'catch-up' });
    expect((await t.waitForJob(list[0].jobId)).state).toBe('succeeded');
    // The next regular tick runs as usual, once.
    for (let i = 0; i < 400; i++) {
      list = await runs(s.id);
      if (list.length >= 2) break;
      await sleep(25);
    }
    expect(list.map((r) => [r.scheduledFor, r.trigger])).toEqual([
      [new Date(missed + 6000).toISOString(), 'tick'],
      [new Date(missed).toISOString(), 'catch-up'],
    ]);
    await waitIdle();

    // Down across two ticks: the last missed one is still inside its window, so one run is made up (not
    // two), keyed by the first missed tick, and a schedule.missed event says several were missed.
    const before = (await runs(s.id)).length;
    const next = Date.parse((await t.json('GET', `/api/v1/desktop-pools/${poolId}/schedules/${s.id}`)).body.nextRunAt);
    await t.stop();
    await sleep(Math.max(0, next + 6000 - Date.now()) + 300);
    await t.restart();
    let after: any[] = [];
    for (let i = 0; i < 200; i++) {
      after = await runs(s.id);
      if (after.length > before) break;
      await sleep(25);
    }
    expect(after.filter((r) => r.trigger === 'catch-up' && r.scheduledFor === new Date(next).toISOString())).toHaveLength(1);
    expect(after.filter((r) => r.scheduledFor === new Date(next + 6000).toISOString())).toHaveLength(0);
    const replayed = await replayEvents();
    expect(replayed.filter((e) => e.type === 'schedule.missed' && e.scheduleId === s.id).map((e) => e.since)).toEqual([new Date(next).toISOString()]);
    await disable(s.id);
    await waitIdle();
  }, 90_000);
});
