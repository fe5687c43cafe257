import { Hono } from 'hono';
import { z } from 'zod';
import type { ExportService } from '../../control/exports/export.service.ts';
import { HOOK_TYPES } from '../../db/schema.ts';
import { AppError } from '../../errors.ts';
import type { RouteDoc } from '../openapi.ts';
import { idParam, nameSchema, parseJsonBody, uuidSchema, numberField } from '../validation.ts';

const sshSchema = z
  .strictObject({
    address: z
      .string()
      .min(1, 'must not be empty')
      .max(253)
      .regex(/^([A-Za-z0-9.:_-]+|\[[0-9A-Fa-f:.]+\])$/, 'must be an IP address or host name')
      .transform((a) => (a.startsWith('[') ? a.slice(1, -1) : a)),
    port: numberField().int('must be an integer').min(1).max(65535).optional(),
    username: z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/, 'must be a user name (letters, digits, "_", ".", "-")'),
    privateKey: z.string().min(1, 'must not be empty').max(16384).optional(),
    privateKeyPath: z.string().min(1, 'must not be empty').max(4096).optional(),
  })
  .refine((s) => (s.privateKey === undefined) !== (s.privateKeyPath === undefined), { message: 'give exactly one of privateKey and privateKeyPath', path: ['privateKey'] });

export const createHostBody = z.strictObject({
  name: nameSchema,
  nqn: z.string().min(1, 'must not be empty').max(223, 'must be at most 223 bytes'),
  ssh: sshSchema.optional(),
  hookType: z.enum(HOOK_TYPES, { message: `must be one of ${HOOK_TYPES.join(', ')}` }).optional(),
  maxDesktops: numberField().int('must be an integer').min(0).max(100_000).nullable().optional(),
});
export const updateHostBody = z
  .strictObject({
    name: nameSchema.optional(),
    nqn: z.string().min(1, 'must not be empty').max(223, 'must be at most 223 bytes').optional(),
    ssh: sshSchema.nullable().optional(),
    hookType: z.enum(HOOK_TYPES, { message: `must be one of ${HOOK_TYPES.join(', ')}` }).optional(),
    maxDesktops: numberField().int('must be an integer').min(0).max(100_000).nullable().optional(),
  })
  .refine((b) => Object.keys(b).length > 0, { message: 'give at least one of name, nqn, ssh, hookType, maxDesktops' });
export const trustHostBody = z.strictObject({ fingerprint: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, 'must be an OpenSSH SHA256 fingerprint ("SHA256:" and 43 base64 characters)') });
export const createSubsystemBody = z.strictObject({ name: nameSchema });
export const allowHostBody = z.strictObject({ hostId: uuidSchema });
export const addNamespaceBody = z.strictObject({ cloneId: uuidSchema, hostIds: z.array(uuidSchema).max(1024).optional() });

export const exportDocs: RouteDoc[] = [
  { method: 'get', path: '/api/v1/hosts', tag: 'hosts', summary: 'List hosts', responses: { 200: 'hosts' } },
  { method: 'post', path: '/api/v1/hosts', tag: 'hosts', summary: 'Register a host by its NVMe host NQN; with ssh and hookType Thicket runs hooks on it (the private key is stored encrypted and never returned)', body: createHostBody, responses: { 201: 'host', 400: 'invalid NQN or key', 409: 'name or NQN taken' } },
  { method: 'patch', path: '/api/v1/hosts/:id', tag: 'hosts', summary: 'Change a host: name, NQN (only while no subsystem allows it), SSH settings (whole; null makes it a plain NVMe host; another address or port drops the pinned key), hookType, maxDesktops', body: updateHostBody, responses: { 200: 'host', 400: 'invalid input', 404: 'unknown id', 409: 'name or NQN taken, or desktops/subsystems depend on what would change' } },
  { method: 'post', path: '/api/v1/hosts/:id/test', tag: 'hosts', summary: 'Log in over SSH and report the host key fingerprint, /etc/nvme/hostnqn, nvme-cli, the NVMe/TCP module and (libvirt) virsh', responses: { 200: '{hostKey, nqn, nqnMatches, nvmeCli, nvmeTcp, virsh}', 404: 'unknown id', 409: 'no SSH settings, or the pinned key does not match', 502: 'cannot connect or log in' } },
  { method: 'post', path: '/api/v1/hosts/:id/trust', tag: 'hosts', summary: 'Pin the host key fingerprint that every hook connection must see', body: trustHostBody, responses: { 200: 'host', 400: 'bad fingerprint', 404: 'unknown id', 409: 'no SSH settings' } },
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
  app.patch('/:id', async (c) => {
    const id = idParam(c, 'id', 'HOST_NOT_FOUND', 'host');
    return c.json(await service.updateHost(id, await parseJsonBody(c, updateHostBody)));
  });
  app.post('/:id/test', async (c) => c.json(await service.testHost(idParam(c, 'id', 'HOST_NOT_FOUND', 'host'))));
  app.post('/:id/trust', async (c) => {
    const id = idParam(c, 'id', 'HOST_NOT_FOUND', 'host');
    return c.json(await service.trustHost(id, (await parseJsonBody(c, trustHostBody)).fingerprint));
  });
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
