import { Hono } from 'hono';
import { z } from 'zod';
import type { ReplicaService } from '../../control/replicas/replica.service.ts';
import type { RouteDoc } from '../openapi.ts';
import { idParam, parseJsonBody, parseQuery, uuidSchema } from '../validation.ts';

export const promoteReplicaBody = z.strictObject({ templateVersionId: uuidSchema, storagePoolId: uuidSchema });
export const moveReplicaBody = z.strictObject({ storagePoolId: uuidSchema });
export const listReplicasQuery = z.strictObject({ storagePoolId: uuidSchema.optional(), templateId: uuidSchema.optional() });

export const replicaDocs: RouteDoc[] = [
  { method: 'get', path: '/api/v1/replicas', tag: 'replicas', summary: 'List replicas', query: listReplicasQuery, responses: { 200: 'replicas' } },
  { method: 'post', path: '/api/v1/replicas', tag: 'replicas', summary: 'Promote a template version to a read-only replica on a storage pool (a job)', body: promoteReplicaBody, responses: { 202: '{replica, job}', 400: 'invalid input', 404: 'unknown version or pool' } },
  { method: 'get', path: '/api/v1/replicas/:id', tag: 'replicas', summary: 'One replica', responses: { 200: '{id, templateVersionId, storagePoolId, state, sizeBytes, sha256, cloneCount}', 404: 'unknown id' } },
  { method: 'post', path: '/api/v1/replicas/:id/verify', tag: 'replicas', summary: 'Re-hash a replica (a job); a mismatch marks it corrupt', responses: { 202: '{job}', 404: 'unknown id', 409: 'busy or not ready' } },
  { method: 'post', path: '/api/v1/replicas/:id/move', tag: 'replicas', summary: 'Move a replica to another storage pool (a job)', body: moveReplicaBody, responses: { 202: '{job}', 404: 'unknown id', 409: 'busy, not ready or already there' } },
  { method: 'delete', path: '/api/v1/replicas/:id', tag: 'replicas', summary: 'Delete a replica (409 REPLICA_IN_USE with the clones while clones reference it)', responses: { 204: 'deleted', 404: 'unknown id', 409: 'in use or busy' } },
];

export function replicaRoutes(service: ReplicaService): Hono {
  const app = new Hono();
  app.get('/', async (c) => c.json(await service.list(parseQuery(c, listReplicasQuery))));
  app.post('/', async (c) => c.json(await service.promote(await parseJsonBody(c, promoteReplicaBody)), 202));
  app.get('/:id', async (c) => c.json(await service.get(idParam(c, 'id', 'REPLICA_NOT_FOUND', 'replica'))));
  app.post('/:id/verify', async (c) => c.json({ job: await service.verify(idParam(c, 'id', 'REPLICA_NOT_FOUND', 'replica')) }, 202));
  app.post('/:id/move', async (c) => {
    const id = idParam(c, 'id', 'REPLICA_NOT_FOUND', 'replica');
    return c.json({ job: await service.move(id, await parseJsonBody(c, moveReplicaBody)) }, 202);
  });
  app.delete('/:id', async (c) => {
    await service.delete(idParam(c, 'id', 'REPLICA_NOT_FOUND', 'replica'));
    return c.body(null, 204);
  });
  return app;
}
