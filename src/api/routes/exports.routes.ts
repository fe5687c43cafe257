import { Hono } from 'hono';
import { z } from 'zod';
import type { ExportService } from '../../control/exports/export.service.ts';
import { AppError } from '../../errors.ts';
import type { RouteDoc } from '../openapi.ts';
import { idParam, nameSchema, parseJsonBody, uuidSchema } from '../validation.ts';

export const createHostBody = z.strictObject({ name: nameSchema, nqn: z.string().min(1, 'must not be empty').max(223, 'must be at most 223 bytes') });
export const createSubsystemBody = z.strictObject({ name: nameSchema });
export const allowHostBody = z.strictObject({ hostId: uuidSchema });
export const addNamespaceBody = z.strictObject({ cloneId: uuidSchema, hostIds: z.array(uuidSchema).max(1024).optional() });

export const exportDocs: RouteDoc[] = [
  { method: 'get', path: '/api/v1/hosts', tag: 'hosts', summary: 'List hosts', responses: { 200: 'hosts' } },
  { method: 'post', path: '/api/v1/hosts', tag: 'hosts', summary: 'Register a host by its NVMe host NQN', body: createHostBody, responses: { 201: 'host', 400: 'invalid NQN', 409: 'name or NQN taken' } },
  { method: 'get', path: '/api/v1/hosts/:id', tag: 'hosts', summary: 'One host with the subsystems it may use', responses: { 200: 'host', 404: 'unknown id' } },
  { method: 'delete', path: '/api/v1/hosts/:id', tag: 'hosts', summary: 'Remove a host (refused while it is allowed in a subsystem)', responses: { 204: 'deleted', 404: 'unknown id', 409: 'host has exports' } },
  { method: 'get', path: '/api/v1/subsystems', tag: 'subsystems', summary: 'List subsystems', responses: { 200: 'subsystems' } },
  { method: 'post', path: '/api/v1/subsystems', tag: 'subsystems', summary: 'Create a subsystem (NQN <prefix>:<name>)', body: createSubsystemBody, responses: { 201: '{id, nqn}', 400: 'invalid name', 409: 'name taken' } },
  { method: 'get', path: '/api/v1/subsystems/:id', tag: 'subsystems', summary: 'A subsystem with its hosts and namespaces', responses: { 200: 'subsystem', 404: 'unknown id' } },
  { method: 'delete', path: '/api/v1/subsystems/:id', tag: 'subsystems', summary: 'Delete a subsystem: its namespaces vanish and its controllers are disconnected', responses: { 204: 'deleted', 404: 'unknown id' } },
  { method: 'post', path: '/api/v1/subsystems/:id/hosts', tag: 'subsystems', summary: 'Allow a host to connect', body: allowHostBody, responses: { 200: 'subsystem', 404: 'unknown subsystem or host' } },
  { method: 'delete', path: '/api/v1/subsystems/:id/hosts/:hostId', tag: 'subsystems', summary: 'Disallow a host and disconnect its controllers', responses: { 204: 'done', 404: 'unknown' } },
  { method: 'post', path: '/api/v1/subsystems/:id/namespaces', tag: 'subsystems', summary: 'Export a clone as a namespace, visible to hostIds (default: every allowed host)', body: addNamespaceBody, responses: { 201: '{nsid, nguid, uuid}', 400: 'invalid input', 404: 'unknown subsystem or clone', 409: 'clone already exported or subsystem full' } },
  { method: 'delete', path: '/api/v1/subsystems/:id/namespaces/:nsid', tag: 'subsystems', summary: 'Unexport a namespace (connected hosts see it vanish)', responses: { 204: 'done', 404: 'unknown' } },
];

export function hostRoutes(service: ExportService): Hono {
  const app = new Hono();
  app.get('/', async (c) => c.json(await service.listHosts()));
  app.post('/', async (c) => c.json(await service.createHost(await parseJsonBody(c, createHostBody)), 201));
  app.get('/:id', async (c) => c.json(await service.getHost(idParam(c, 'id', 'HOST_NOT_FOUND', 'host'))));
  app.delete('/:id', async (c) => {
    await service.deleteHost(idParam(c, 'id', 'HOST_NOT_FOUND', 'host'));
    return c.body(null, 204);
  });
  return app;
}

export function subsystemRoutes(service: ExportService): Hono {
  const app = new Hono();
  const sid = (c: Parameters<typeof idParam>[0]) => idParam(c, 'id', 'SUBSYSTEM_NOT_FOUND', 'subsystem');
  app.get('/', async (c) => c.json(await service.listSubsystems()));
  app.post('/', async (c) => c.json(await service.createSubsystem(await parseJsonBody(c, createSubsystemBody)), 201));
  app.get('/:id', async (c) => c.json(await service.getSubsystem(sid(c))));
  app.delete('/:id', async (c) => {
    await service.deleteSubsystem(sid(c));
    return c.body(null, 204);
  });
  app.post('/:id/hosts', async (c) => {
    const id = sid(c);
    const body = await parseJsonBody(c, allowHostBody);
    return c.json(await service.allowHost(id, body.hostId));
  });
  app.delete('/:id/hosts/:hostId', async (c) => {
    const id = sid(c);
    await service.disallowHost(id, idParam(c, 'hostId', 'HOST_NOT_FOUND', 'host'));
    return c.body(null, 204);
  });
  app.post('/:id/namespaces', async (c) => {
    const id = sid(c);
    const body = await parseJsonBody(c, addNamespaceBody);
    return c.json(await service.addNamespace(id, body), 201);
  });
  app.delete('/:id/namespaces/:nsid', async (c) => {
    const id = sid(c);
    const raw = c.req.param('nsid');
    if (!/^\d{1,10}$/.test(raw)) throw new AppError('NAMESPACE_NOT_FOUND', `namespace ${raw} does not exist`);
    await service.removeNamespace(id, Number(raw));
    return c.body(null, 204);
  });
  return app;
}
