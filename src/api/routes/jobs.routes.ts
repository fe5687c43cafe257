import { Hono } from 'hono';
import { z } from 'zod';
import type { JobService } from '../../control/jobs/job.service.ts';
import { JOB_STATES, type JobState } from '../../db/schema.ts';
import type { RouteDoc } from '../openapi.ts';
import { idParam, parseQuery, uuidSchema, queryNumber } from '../validation.ts';

export const listJobsQuery = z.strictObject({
  state: z
    .string()
    .optional()
    .transform((s) => (s ? s.split(',').map((x) => x.trim()) : undefined))
    .pipe(z.array(z.enum(JOB_STATES, { message: `must be one of ${JOB_STATES.join(', ')}` })).optional()),
  kind: z.string().max(64).optional(),
  resourceId: uuidSchema.optional(),
  limit: queryNumber().int('must be an integer').min(1).max(1000).optional(),
});

export const jobDocs: RouteDoc[] = [
  { method: 'get', path: '/api/v1/jobs', tag: 'jobs', summary: 'List jobs, newest first (?state=running,queued&kind=&resourceId=&limit=)', query: listJobsQuery, responses: { 200: 'jobs', 400: 'invalid filter' } },
  { method: 'get', path: '/api/v1/jobs/:id', tag: 'jobs', summary: 'One job with progress, per-item results and error', responses: { 200: 'job', 404: 'unknown id' } },
  { method: 'post', path: '/api/v1/jobs/:id/cancel', tag: 'jobs', summary: 'Cancel a queued or running job (rolled back)', responses: { 202: 'cancel requested', 404: 'unknown id', 409: 'already finished' } },
];

export function jobRoutes(service: JobService): Hono {
  const app = new Hono();
  app.get('/', async (c) => {
    const q = parseQuery(c, listJobsQuery);
    return c.json(await service.list({ states: q.state as JobState[] | undefined, kind: q.kind, resourceId: q.resourceId, limit: q.limit }));
  });
  app.get('/:id', async (c) => c.json(await service.get(idParam(c, 'id', 'JOB_NOT_FOUND', 'job'))));
  app.post('/:id/cancel', async (c) => c.json(await service.cancel(idParam(c, 'id', 'JOB_NOT_FOUND', 'job')), 202));
  return app;
}
