// The OpenAPI description is assembled from the same zod schemas the routes validate with, so the two
// cannot drift apart.
import { z } from 'zod';

export interface RouteDoc {
  method: 'get' | 'post' | 'patch' | 'delete';
  path: string;
  summary: string;
  tag: string;
  /** A JSON body schema, or raw bytes (optionally also accepting a JSON body, e.g. {sourcePath}). */
  body?: z.ZodType | { binary: true; description: string; json?: z.ZodType };
  query?: z.ZodType;
  responses: Record<number, string>;
  auth?: boolean;
}

const errorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: { code: { type: 'string' }, message: { type: 'string' }, details: {} },
      required: ['code', 'message'],
    },
  },
  required: ['error'],
};

function toOpenApiPath(p: string): string {
  return p.replace(/:([A-Za-z]+)/g, '{$1}');
}

export function buildOpenApi(routes: RouteDoc[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const p = toOpenApiPath(r.path);
    paths[p] ??= {};
    const params = [...r.path.matchAll(/:([A-Za-z]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    if (r.query) {
      const qs = z.toJSONSchema(r.query, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, schema] of Object.entries(qs.properties ?? {})) {
        params.push({ name, in: 'query', required: qs.required?.includes(name) ?? false, schema: schema as { type: string } });
      }
    }
    const op: Record<string, unknown> = {
      summary: r.summary,
      tags: [r.tag],
      parameters: params,
      responses: Object.fromEntries(
        Object.entries(r.responses).map(([status, description]) => [
          status,
          Number(status) >= 400 ? { description, content: { 'application/json': { schema: errorSchema } } } : { description },
        ]),
      ),
    };
    if (r.auth === false) op.security = [];
    if (r.body) {
      op.requestBody =
        'binary' in r.body
          ? {
              required: true,
              description: r.body.description,
              content: {
                'application/octet-stream': { schema: { type: 'string', format: 'binary' } },
                ...(r.body.json ? { 'application/json': { schema: z.toJSONSchema(r.body.json, { io: 'input', unrepresentable: 'any' }) } } : {}),
              },
            }
          : { required: true, content: { 'application/json': { schema: z.toJSONSchema(r.body as z.ZodType, { io: 'input', unrepresentable: 'any' }) } } };
    }
    paths[p][r.method] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Thicket API', version, description: 'VDI linked-clone provisioning appliance. Errors are {"error": {"code", "message", "details"}}.' },
    servers: [{ url: '/' }],
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    security: [{ bearer: [] }],
    paths,
  };
}
