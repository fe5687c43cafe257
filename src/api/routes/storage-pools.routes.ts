import { Hono } from 'hono';
import { z } from 'zod';
import type { StoragePoolService } from '../../control/storage-pools/storage-pool.service.ts';
import type { RouteDoc } from '../openapi.ts';
import { idParam, nameSchema, parseJsonBody, numberField } from '../validation.ts';

export const createStoragePoolBody = z.strictObject({
  name: nameSchema,
  path: z.string().min(1, 'must not be empty').max(4096),
  tier: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'must be a lowercase label such as "fast" or "capacity"'),
  capacityBytes: numberField().int('must be an integer').min(256 * 1024 * 1024, 'must be at least 268435456 (256 MiB)').max(2 ** 52).optional(),
});

export const storagePoolDocs: RouteDoc[] = [
  { method: 'get', path: '/api/v1/storage-pools', tag: 'storage pools', summary: 'List storage pools with usage', responses: { 200: 'storage pools' } },
  { method: 'post', path: '/api/v1/storage-pools', tag: 'storage pools', summary: 'Add a storage pool (a writable directory)', body: createStoragePoolBody, responses: { 201: 'created', 400: 'invalid input or path', 409: 'name or path taken' } },
  { method: 'get', path: '/api/v1/storage-pools/:id', tag: 'storage pools', summary: 'One storage pool with usage {capacityBytes, usedBytes, freeBytes, replicaBytes, cloneBytes}', responses: { 200: 'storage pool', 404: 'unknown id' } },
  { method: 'delete', path: '/api/v1/storage-pools/:id', tag: 'storage pools', summary: 'Remove a storage pool (refused while it holds replicas or clones)', responses: { 204: 'deleted', 404: 'unknown id', 409: 'in use' } },
];

export function storagePoolRoutes(service: StoragePoolService): Hono {
  const app = new Hono();
  app.get('/', async (c) => c.json(await service.list()));
  app.post('/', async (c) => c.json(await service.create(await parseJsonBody(c, createStoragePoolBody)), 201));
  app.get('/:id', async (c) => c.json(await service.get(idParam(c, 'id', 'STORAGE_POOL_NOT_FOUND', 'storage pool'))));
  app.delete('/:id', async (c) => {
    await service.delete(idParam(c, 'id', 'STORAGE_POOL_NOT_FOUND', 'storage pool'));
    return c.body(null, 204);
  });
  return app;
}
