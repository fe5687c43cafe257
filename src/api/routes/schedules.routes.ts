import { Hono } from 'hono';
import { z } from 'zod';
import type { ScheduleService } from '../../control/schedules/schedule.service.ts';
import { MAX_POOL_SIZE } from '../../control/desktop-pools/desktop-pool.service.ts';
import { IN_USE_POLICIES, SCHEDULE_ACTIONS } from '../../db/schema.ts';
import type { RouteDoc } from '../openapi.ts';
import { idParam, parseJsonBody, parseQuery, numberField, queryNumber } from '../validation.ts';

const fields = {
  cron: z.string({ message: 'must be a string' }).min(1, 'must not be empty').max(200, 'must be at most 200 characters'),
  timezone: z.string({ message: 'must be a string' }).min(1, 'must not be empty').max(64),
  action: z.enum(SCHEDULE_ACTIONS, { message: `must be one of ${SCHEDULE_ACTIONS.join(', ')}` }),
  waveSize: numberField().int('must be an integer').min(1).max(MAX_POOL_SIZE),
  inUse: z.enum(IN_USE_POLICIES, { message: `must be one of ${IN_USE_POLICIES.join(', ')}` }),
  waitDeadlineMinutes: numberField().positive('must be more than 0').max(7 * 24 * 60).nullable(),
  maxFailuresPerWave: numberField().int('must be an integer').min(0).max(MAX_POOL_SIZE),
  enabled: z.boolean({ message: 'must be true or false' }),
};

export const createScheduleBody = z.strictObject({
  ...fields,
  timezone: fields.timezone.optional().default('UTC'),
  waitDeadlineMinutes: fields.waitDeadlineMinutes.optional(),
  maxFailuresPerWave: fields.maxFailuresPerWave.optional(),
  enabled: fields.enabled.optional().default(true),
});
export const updateScheduleBody = z.strictObject({
  cron: fields.cron.optional(),
  timezone: fields.timezone.optional(),
  action: fields.action.optional(),
  waveSize: fields.waveSize.optional(),
  inUse: fields.inUse.optional(),
  waitDeadlineMinutes: fields.waitDeadlineMinutes.optional(),
  maxFailuresPerWave: fields.maxFailuresPerWave.optional(),
  enabled: fields.enabled.optional(),
});
export const runsQuery = z.strictObject({ limit: queryNumber().int('must be an integer').min(1).max(1000).optional() });

const base = '/api/v1/desktop-pools/:id/schedules';
export const scheduleDocs: RouteDoc[] = [
  { method: 'get', path: '/api/v1/schedules', tag: 'schedules', summary: 'Every schedule of every pool, with nextRunAt and the last run', responses: { 200: 'schedules' } },
  {
    method: 'post',
    path: base,
    tag: 'schedules',
    summary: 'Refresh or recompose the pool on a cron expression (seconds optional), in waves of at most waveSize desktops; inUse: skip | wait (until waitDeadlineMinutes) | force (reset and restart the VM)',
    body: createScheduleBody,
    responses: { 201: 'schedule', 400: 'invalid input, cron expression or time zone', 404: 'unknown pool' },
  },
  { method: 'get', path: base, tag: 'schedules', summary: "The pool's schedules", responses: { 200: 'schedules', 404: 'unknown pool' } },
  { method: 'get', path: `${base}/:scheduleId`, tag: 'schedules', summary: 'One schedule with nextRunAt and the last run', responses: { 200: 'schedule', 404: 'unknown pool or schedule' } },
  { method: 'patch', path: `${base}/:scheduleId`, tag: 'schedules', summary: 'Change a schedule (enable or disable with {enabled})', body: updateScheduleBody, responses: { 200: 'schedule', 400: 'invalid input', 404: 'unknown pool or schedule' } },
  { method: 'delete', path: `${base}/:scheduleId`, tag: 'schedules', summary: 'Delete a schedule (a run in progress goes on; cancel its job to stop it)', responses: { 204: 'deleted', 404: 'unknown pool or schedule' } },
  { method: 'get', path: `${base}/:scheduleId/runs`, tag: 'schedules', summary: 'Run history, newest first: tick, trigger, job, state, desktop counts (?limit=)', query: runsQuery, responses: { 200: 'runs', 404: 'unknown pool or schedule' } },
];

/** Mounted at /api/v1/desktop-pools. */
export function poolScheduleRoutes(service: ScheduleService): Hono {
  const app = new Hono();
  const pid = (c: Parameters<typeof idParam>[0]) => idParam(c, 'id', 'DESKTOP_POOL_NOT_FOUND', 'desktop pool');
  const sid = (c: Parameters<typeof idParam>[0]) => idParam(c, 'scheduleId', 'SCHEDULE_NOT_FOUND', 'schedule');
  app.get('/:id/schedules', async (c) => c.json(await service.listForPool(pid(c))));
  app.post('/:id/schedules', async (c) => {
    const id = pid(c);
    return c.json(await service.create(id, await parseJsonBody(c, createScheduleBody)), 201);
  });
  app.get('/:id/schedules/:scheduleId', async (c) => c.json(await service.get(pid(c), sid(c))));
  app.patch('/:id/schedules/:scheduleId', async (c) => {
    const [id, scheduleId] = [pid(c), sid(c)];
    return c.json(await service.update(id, scheduleId, await parseJsonBody(c, updateScheduleBody)));
  });
  app.delete('/:id/schedules/:scheduleId', async (c) => {
    await service.delete(pid(c), sid(c));
    return c.body(null, 204);
  });
  app.get('/:id/schedules/:scheduleId/runs', async (c) => {
    const [id, scheduleId] = [pid(c), sid(c)];
    return c.json(await service.runs(id, scheduleId, parseQuery(c, runsQuery).limit));
  });
  return app;
}

/** Mounted at /api/v1/schedules. */
export function scheduleRoutes(service: ScheduleService): Hono {
  const app = new Hono();
  app.get('/', async (c) => c.json(await service.list()));
  return app;
}
