import { Hono } from 'hono';
import { z } from 'zod';
import type { DesktopPoolService } from '../../control/desktop-pools/desktop-pool.service.ts';
import { DESKTOP_EVENTS, MAX_POOL_SIZE } from '../../control/desktop-pools/desktop-pool.service.ts';
import { AppError } from '../../errors.ts';
import type { RouteDoc } from '../openapi.ts';
import { idParam, nameSchema, parseJsonBody, parseOptionalJsonBody, uuidSchema, numberField } from '../validation.ts';

const qosSchema = z.strictObject({
  iops: numberField().int('must be an integer').min(1).max(10_000_000).nullable().optional(),
  bytesPerSecond: numberField().int('must be an integer').min(4096).max(1e13).nullable().optional(),
});

const vmSchema = z.strictObject({
  vcpus: numberField().int('must be an integer').min(1).max(256).optional(),
  memoryMiB: numberField().int('must be an integer').min(64).max(4_194_304).optional(),
  network: nameSchema.optional(),
});

export const createDesktopPoolBody = z.strictObject({
  // 40, not 64: the pool's extra subsystems are named <name>-2 ... and NQNs must stay short.
  name: z
    .string()
    .min(1, 'must not be empty')
    .max(40, 'must be at most 40 characters')
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'may contain only letters, digits, ".", "_" and "-", starting with a letter or digit'),
  replicaId: uuidSchema,
  storagePoolId: uuidSchema,
  size: numberField().int('must be an integer').min(0).max(MAX_POOL_SIZE),
  namePattern: z.string().min(1, 'must not be empty').max(64),
  hostIds: z.array(uuidSchema).max(1024),
  qos: qosSchema.optional(),
  refreshGraceSeconds: numberField().int('must be an integer').min(0).max(30 * 24 * 3600).optional(),
  refreshOnLogoff: z.boolean().optional(),
  vm: vmSchema.optional(),
});
export const resizeDesktopPoolBody = z
  .strictObject({
    size: numberField().int('must be an integer').min(0).max(MAX_POOL_SIZE).optional(),
    force: z.boolean().optional(),
    refreshOnLogoff: z.boolean().optional(),
    vm: vmSchema.optional(),
  })
  .refine((b) => b.size !== undefined || b.refreshOnLogoff !== undefined || b.vm !== undefined, { message: 'give size, refreshOnLogoff or vm', path: ['size'] });
export const refreshBody = z.strictObject({ desktops: z.array(z.string().min(1).max(64)).max(MAX_POOL_SIZE).optional(), force: z.boolean().optional() });
export const undoRefreshBody = z.strictObject({ force: z.boolean().optional() });
export const recomposeBody = z.strictObject({ replicaId: uuidSchema, desktops: z.array(z.string().min(1).max(64)).max(MAX_POOL_SIZE).optional(), force: z.boolean().optional() });
export const desktopStateBody = z
  .strictObject({
    state: z.enum(['in-use', 'available'], { message: 'must be "in-use" or "available"' }).optional(),
    event: z.enum(DESKTOP_EVENTS, { message: `must be one of ${DESKTOP_EVENTS.join(', ')}` }).optional(),
  })
  .refine((b) => (b.state === undefined) !== (b.event === undefined), { message: 'give exactly one of state and event', path: ['state'] });

export const desktopPoolDocs: RouteDoc[] = [
  { method: 'get', path: '/api/v1/desktop-pools', tag: 'desktop pools', summary: 'List desktop pools with counts by desktop state and space', responses: { 200: 'pools' } },
  { method: 'post', path: '/api/v1/desktop-pools', tag: 'desktop pools', summary: 'Create a pool of `size` exported linked clones in one burst (a job)', body: createDesktopPoolBody, responses: { 202: '{pool, job}', 400: 'invalid input', 404: 'unknown replica, storage pool or host', 409: 'name taken or replica not ready' } },
  { method: 'get', path: '/api/v1/desktop-pools/:id', tag: 'desktop pools', summary: 'One pool: counts by state, space {uniqueBytes, sharedBytes, savedBytes}', responses: { 200: 'pool', 404: 'unknown id' } },
  { method: 'patch', path: '/api/v1/desktop-pools/:id', tag: 'desktop pools', summary: 'Change refreshOnLogoff or vm settings (200), or grow or shrink (202 with a job; available desktops go first, in-use ones only with force; detach hooks run before removal)', body: resizeDesktopPoolBody, responses: { 200: '{pool, job: null}', 202: '{pool, job}', 404: 'unknown id', 409: 'busy or desktops in use' } },
  { method: 'delete', path: '/api/v1/desktop-pools/:id', tag: 'desktop pools', summary: 'Run detach hooks, then unexport and delete every clone of the pool (a job); ?force=true deletes even when a detach hook fails', responses: { 202: '{job}', 404: 'unknown id', 409: 'busy' } },
  { method: 'get', path: '/api/v1/desktop-pools/:id/desktops', tag: 'desktop pools', summary: 'Desktops {name, cloneId, subsystemNqn, nsid, uuid, state, uniqueBytes}', responses: { 200: 'desktops', 404: 'unknown id' } },
  { method: 'post', path: '/api/v1/desktop-pools/:id/refresh', tag: 'desktop pools', summary: 'Reset desktops to the replica (skipping in-use ones unless force)', body: refreshBody, responses: { 202: '{job}', 404: 'unknown id', 409: 'busy' } },
  { method: 'post', path: '/api/v1/desktop-pools/:id/recompose', tag: 'desktop pools', summary: 'Move desktops to another replica of the same or a newer template version', body: recomposeBody, responses: { 202: '{job}', 400: 'wrong replica', 404: 'unknown id', 409: 'busy' } },
  { method: 'post', path: '/api/v1/desktop-pools/:id/desktops/:name/state', tag: 'desktop pools', summary: 'Mark a desktop in use or available {state}, or report {event}: vm-started, vm-stopped, session-started, session-ended (hosts call this with their host token; refreshOnLogoff resets the clone on vm-stopped and session-ended)', body: desktopStateBody, responses: { 200: 'desktop', 403: 'host token of another host', 404: 'unknown', 409: 'desktop provisioning or refreshing' } },
  { method: 'post', path: '/api/v1/desktop-pools/:id/desktops/:name/undo-refresh', tag: 'desktop pools', summary: 'Undo a refresh or recompose within the pool\'s grace period', body: undoRefreshBody, responses: { 200: 'desktop', 404: 'unknown', 409: 'nothing to undo, or the desktop is in use (unless force)' } },
];

export function desktopPoolRoutes(service: DesktopPoolService): Hono {
  const app = new Hono();
  const pid = (c: Parameters<typeof idParam>[0]) => idParam(c, 'id', 'DESKTOP_POOL_NOT_FOUND', 'desktop pool');
  app.get('/', async (c) => c.json(await service.list()));
  app.post('/', async (c) => c.json(await service.create(await parseJsonBody(c, createDesktopPoolBody)), 202));
  app.get('/:id', async (c) => c.json(await service.get(pid(c))));
  app.patch('/:id', async (c) => {
    const id = pid(c);
    const r = await service.patch(id, await parseJsonBody(c, resizeDesktopPoolBody));
    return c.json(r, r.job ? 202 : 200);
  });
  app.delete('/:id', async (c) => {
    const force = c.req.query('force');
    if (force !== undefined && force !== 'true' && force !== 'false') throw new AppError('VALIDATION_FAILED', 'force: must be true or false', { field: 'force' });
    return c.json(await service.delete(pid(c), { force: force === 'true' }), 202);
  });
  app.get('/:id/desktops', async (c) => c.json(await service.desktops(pid(c))));
  app.post('/:id/refresh', async (c) => {
    const id = pid(c);
    return c.json(await service.refresh(id, await parseOptionalJsonBody(c, refreshBody)), 202);
  });
  app.post('/:id/recompose', async (c) => {
    const id = pid(c);
    return c.json(await service.recompose(id, await parseJsonBody(c, recomposeBody)), 202);
  });
  app.post('/:id/desktops/:name/state', async (c) => {
    const id = pid(c);
    const body = await parseJsonBody(c, desktopStateBody);
    return c.json(await service.setDesktopState(id, c.req.param('name'), body, c.get('callerHostId' as never) as string | undefined));
  });
  app.post('/:id/desktops/:name/undo-refresh', async (c) => {
    const id = pid(c);
    const body = await parseOptionalJsonBody(c, undoRefreshBody);
    return c.json(await service.undoRefresh(id, c.req.param('name'), { force: body.force === true }));
  });
  return app;
}
