import { Readable } from 'node:stream';
import { Hono } from 'hono';
import { z } from 'zod';
import { IMAGE_FORMATS } from '../../control/registry/qemu-img.ts';
import type { TemplateService } from '../../control/registry/template.service.ts';
import { AppError } from '../../errors.ts';
import type { RouteDoc } from '../openapi.ts';
import { idParam, nameSchema, parseJsonBody, parseWith } from '../validation.ts';

export const createTemplateBody = z.strictObject({
  name: nameSchema,
  description: z.string().max(4096).optional(),
});

const formatSchema = z.enum(IMAGE_FORMATS, { message: `must be one of ${IMAGE_FORMATS.join(', ')}` });

export const versionFromPathBody = z.strictObject({
  sourcePath: z.string().min(1, 'must not be empty').max(4096),
  format: formatSchema.optional(),
});

export const versionUploadQuery = z.object({ format: formatSchema.default('raw') });

export const templateDocs: RouteDoc[] = [
  { method: 'get', path: '/api/v1/templates', tag: 'templates', summary: 'List templates', responses: { 200: 'templates' } },
  { method: 'post', path: '/api/v1/templates', tag: 'templates', summary: 'Register a template', body: createTemplateBody, responses: { 201: 'created', 400: 'invalid input', 409: 'name taken' } },
  { method: 'get', path: '/api/v1/templates/:id', tag: 'templates', summary: 'A template with its versions', responses: { 200: 'template', 404: 'unknown id' } },
  { method: 'delete', path: '/api/v1/templates/:id', tag: 'templates', summary: 'Delete a template and its versions (replicas and clones are not affected)', responses: { 204: 'deleted', 404: 'unknown id' } },
  {
    method: 'post',
    path: '/api/v1/templates/:id/versions',
    tag: 'templates',
    summary: 'Add an immutable version: an octet-stream upload (?format=raw|qcow2|vmdk|vhdx|vdi) or JSON {sourcePath, format}',
    query: versionUploadQuery,
    body: { binary: true, description: 'the image bytes; or application/json {sourcePath, format} naming a file on the appliance', json: versionFromPathBody },
    responses: { 201: '{id, templateId, version, sizeBytes, sha256, format}', 400: 'invalid input', 404: 'unknown template', 415: 'unsupported content type', 422: 'corrupt or unsupported image', 507: 'out of space' },
  },
];

export function templateRoutes(service: TemplateService): Hono {
  const app = new Hono();
  app.get('/', async (c) => c.json(await service.list()));
  app.post('/', async (c) => c.json(await service.create(await parseJsonBody(c, createTemplateBody)), 201));
  app.get('/:id', async (c) => c.json(await service.get(idParam(c, 'id', 'TEMPLATE_NOT_FOUND', 'template'))));
  app.delete('/:id', async (c) => {
    await service.delete(idParam(c, 'id', 'TEMPLATE_NOT_FOUND', 'template'));
    return c.body(null, 204);
  });
  app.post('/:id/versions', async (c) => {
    const templateId = idParam(c, 'id', 'TEMPLATE_NOT_FOUND', 'template');
    const contentType = (c.req.header('content-type') ?? '').split(';')[0].trim().toLowerCase();
    if (contentType === 'application/json') {
      const body = await parseJsonBody(c, versionFromPathBody);
      // The format may come in the body or, as for uploads, in ?format=; both given must agree.
      const query = c.req.query('format') === undefined ? undefined : parseWith(versionUploadQuery, c.req.query(), 'query').format;
      if (body.format !== undefined && query !== undefined && body.format !== query) {
        throw new AppError('VALIDATION_FAILED', `format: the body says "${body.format}" but ?format= says "${query}"`, { field: 'format' });
      }
      return c.json(await service.addVersionFromPath(templateId, body.sourcePath, body.format ?? query ?? 'raw'), 201);
    }
    try {
      if (contentType === 'application/octet-stream' || contentType === '') {
        const { format } = parseWith(versionUploadQuery, c.req.query(), 'query');
        const stream = c.req.raw.body;
        if (!stream) throw new AppError('IMAGE_INVALID', 'the image is empty');
        const body = Readable.fromWeb(stream as import('node:stream/web').ReadableStream<Uint8Array>);
        return c.json(await service.addVersionFromStream(templateId, body, format), 201);
      }
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', `Content-Type must be application/octet-stream (image bytes) or application/json ({sourcePath, format}), got "${contentType}"`);
    } catch (err) {
      // The rest of a refused upload may still be on its way; the server drops it only for a short while
      // before closing the connection, so the client must not send another request on this one.
      c.header('Connection', 'close');
      throw err;
    }
  });
  return app;
}
