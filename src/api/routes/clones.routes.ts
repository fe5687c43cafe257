import { Hono } from 'hono';
import { z } from 'zod';
import type { CloneService } from '../../control/clones/clone.service.ts';
import type { RouteDoc } from '../openapi.ts';
import { idParam, nameSchema, parseJsonBody, parseQuery, uuidSchema, numberField } from '../validation.ts';

const qosSchema = z.strictObject({
  iops: numberField().int('must be an integer').min(1).max(10_000_000).nullable().optional(),
  bytesPerSecond: numberField().int('must be an integer').min(4096).max(1e13).nullable().optional(),
});

export const createCloneBody = z.strictObject({
  replicaId: uuidSchema,
  storagePoolId: uuidSchema,
  name: nameSchema,
  sizeBytes: numberField().int('must be an integer').positive().max(2 ** 50).optional(),
  qos: qosSchema.optional(),
});

export const patchCloneBody = z.strictObject({ qos: qosSchema });
export const listClonesQuery = z.strictObject({ replicaId: uuidSchema.optional(), storagePoolId: uuidSchema.optional() });

export const cloneDocs: RouteDoc[] = [
  { method: 'get', path: '/api/v1/clones', tag: 'clones', summary: 'List clones (?replicaId=&storagePoolId=)', query: listClonesQuery, responses: { 200: 'clones' } },
  { method: 'post', path: '/api/v1/clones', tag: 'clones', summary: 'Create a linked clone of a ready replica (no data is copied)', body: createCloneBody, responses: { 201: '{id, name, replicaId, storagePoolId, sizeBytes, state, uniqueBytes, qos}', 400: 'invalid input', 404: 'unknown replica or pool', 409: 'name taken or replica not ready' } },
  { method: 'get', path: '/api/v1/clones/:id', tag: 'clones', summary: 'One clone with uniqueBytes', responses: { 200: 'clone', 404: 'unknown id' } },
  { method: 'patch', path: '/api/v1/clones/:id', tag: 'clones', summary: 'Change QoS limits {qos: {iops, bytesPerSecond}} (null removes a limit)', body: patchCloneBody, responses: { 200: 'clone', 400: 'invalid input', 404: 'unknown id' } },
  { method: 'post', path: '/api/v1/clones/:id/reset', tag: 'clones', summary: 'Drop all of the clone\'s changes (back to the replica)', responses: { 200: 'clone', 404: 'unknown id' } },
  { method: 'delete', path: '/api/v1/clones/:id', tag: 'clones', summary: 'Delete a clone; its space is free when the call returns', responses: { 204: 'deleted', 404: 'unknown id' } },
];

export function cloneRoutes(service: CloneService): Hono {
  const app = new Hono();
  app.get('/', async (c) => c.json(await service.list(parseQuery(c, listClonesQuery))));
  app.post('/', async (c) => c.json(await service.create(await parseJsonBody(c, createCloneBody)), 201));
  app.get('/:id', async (c) => c.json(await service.get(idParam(c, 'id', 'CLONE_NOT_FOUND', 'clone'))));
  app.patch('/:id', async (c) => {
    const id = idParam(c, 'id', 'CLONE_NOT_FOUND', 'clone');
    const body = await parseJsonBody(c, patchCloneBody);
    return c.json(await service.setQos(id, body.qos));
  });
  app.post('/:id/reset', async (c) => c.json(await service.reset(idParam(c, 'id', 'CLONE_NOT_FOUND', 'clone'))));
  app.delete('/:id', async (c) => {
    await service.delete(idParam(c, 'id', 'CLONE_NOT_FOUND', 'clone'));
    return c.body(null, 204);
  });
  return app;
}
