import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_JSON_BODY_BYTES } from '../../src/api/validation.ts';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

/**
 * Sends a POST whose body is streamed (chunked, no Content-Length) until the server answers or `maxBytes`
 * went out; resolves with the status and how many bytes were sent before the answer.
 */
function streamingPost(url: string, headers: Record<string, string>, chunk: Buffer, maxBytes: number, timeoutMs = 10_000) {
  return new Promise<{ status: number; body: string; sentBytes: number }>((resolve, reject) => {
    let sent = 0;
    let answered = false;
    const req = http.request(url, { method: 'POST', headers: { ...headers, 'transfer-encoding': 'chunked' } }, (res) => {
      answered = true;
      let body = '';
      res.on('data', (b: Buffer) => (body += b));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode!, body, sentBytes: sent });
        req.destroy();
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms after ${sent} bytes`));
    }, timeoutMs);
    req.on('error', (err) => {
      if (!answered) {
        clearTimeout(timer);
        reject(err);
      }
    });
    const pump = () => {
      while (!answered && sent < maxBytes) {
        sent += chunk.length;
        if (!req.write(chunk)) {
          req.once('drain', pump);
          return;
        }
      }
      if (!answered && sent >= maxBytes) req.end();
    };
    pump();
  });
}

describe.each(DATABASE_KINDS)('API basics (%s)', (kind) => {
  let t: TestThicket;
  let sourceDir: string;

  beforeAll(async () => {
    t = await startTestThicket(kind);
    sourceDir = await mkdtemp(path.join(os.tmpdir(), 'thicket-api-basics-'));
  });

  afterAll(async () => {
    await t?.destroy();
    if (sourceDir) await rm(sourceDir, { recursive: true, force: true });
  });

  describe('/metrics', () => {
    it('is Prometheus text with HTTP request counters and job gauges, without a token', async () => {
      // One finished job so thicket_jobs has a sample.
      const image = path.join(sourceDir, 'metrics.img');
      await writeFile(image, Buffer.alloc(8192, 1));
      const template = await t.json('POST', '/api/v1/templates', { name: 'metrics' });
      const version = await t.json('POST', `/api/v1/templates/${template.body.id}/versions`, { sourcePath: image, format: 'raw' });
      const pools = await t.json('GET', '/api/v1/storage-pools');
      const promoted = await t.json('POST', '/api/v1/replicas', { templateVersionId: version.body.id, storagePoolId: pools.body[0].id });
      expect((await t.waitForJob(promoted.body.job.id)).state).toBe('succeeded');
      await fetch(`${t.url}/healthz`);

      const res = await fetch(`${t.url}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      const text = await res.text();
      expect(text).toContain('# TYPE thicket_http_requests_total counter');
      expect(text).toMatch(/^thicket_http_requests_total\{method="GET",route="\/healthz",status="200"\} [1-9]\d*$/m);
      expect(text).toMatch(/^thicket_http_requests_total\{method="POST",route="\/api\/v1\/templates",status="201"\} [1-9]\d*$/m);
      expect(text).toContain('# TYPE thicket_jobs gauge');
      expect(text).toMatch(/^thicket_jobs\{kind="replica\.promote",state="succeeded"\} 1$/m);
      expect(text).toContain('# TYPE thicket_http_request_duration_seconds histogram');
      expect(text).toContain('thicket_event_streams');
      // Every non-comment line is `name{labels} value`.
      for (const line of text.split('\n').filter((l) => l && !l.startsWith('#'))) {
        expect(line).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? \S+$/);
      }
    });

    it('labels unmatched requests as one route instead of one label per URL', async () => {
      await t.api(`/api/v1/nothing-here-${randomUUID()}`);
      const text = await (await fetch(`${t.url}/metrics`)).text();
      expect(text).not.toMatch(/nothing-here/);
    });
  });

  it('names an unknown query parameter as a parameter, not a body field', async () => {
    const { status, body } = await t.json('GET', '/api/v1/jobs?foo=bar');
    expect(status).toBe(400);
    expect(body.error.message).toBe('(query): unknown parameter(s): foo');
  });

  describe('/api/v1/openapi.json', () => {
    it('is an OpenAPI 3.1 document listing every path of the API', async () => {
      const { status, body } = await t.json('GET', '/api/v1/openapi.json');
      expect(status).toBe(200);
      expect(body.openapi).toMatch(/^3\.1\./);
      expect(body.info).toMatchObject({ title: expect.any(String), version: expect.any(String) });
      expect(body.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
      const ops = Object.entries(body.paths as Record<string, Record<string, unknown>>).flatMap(([p, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${p}`));
      for (const op of [
        'GET /healthz',
        'GET /metrics',
        'GET /api/v1/openapi.json',
        'GET /api/v1/events',
        'GET /api/v1/storage-pools',
        'POST /api/v1/storage-pools',
        'GET /api/v1/storage-pools/{id}',
        'DELETE /api/v1/storage-pools/{id}',
        'GET /api/v1/templates',
        'POST /api/v1/templates',
        'GET /api/v1/templates/{id}',
        'DELETE /api/v1/templates/{id}',
        'POST /api/v1/templates/{id}/versions',
        'GET /api/v1/replicas',
        'POST /api/v1/replicas',
        'GET /api/v1/replicas/{id}',
        'DELETE /api/v1/replicas/{id}',
        'POST /api/v1/replicas/{id}/verify',
        'POST /api/v1/replicas/{id}/move',
        'GET /api/v1/jobs',
        'GET /api/v1/jobs/{id}',
        'POST /api/v1/jobs/{id}/cancel',
      ]) {
        expect(ops).toContain(op);
      }
      // Both ways of adding a version are described: image bytes, or JSON naming a file on the appliance.
      const versions = body.paths['/api/v1/templates/{id}/versions'].post.requestBody.content;
      expect(Object.keys(versions).sort()).toEqual(['application/json', 'application/octet-stream']);
      expect(versions['application/json'].schema.properties).toHaveProperty('sourcePath');
      // Path parameters are declared.
      const getJob = body.paths['/api/v1/jobs/{id}'].get;
      expect(getJob.parameters).toContainEqual(expect.objectContaining({ name: 'id', in: 'path', required: true }));
      // Health and metrics need no token; the rest does.
      expect(body.paths['/healthz'].get.security).toEqual([]);
      expect(body.security).toEqual([{ bearer: [] }]);
    });

    it('documents only routes that exist: every documented operation is routed by the server', async () => {
      const { body } = await t.json('GET', '/api/v1/openapi.json');
      for (const [p, methods] of Object.entries(body.paths as Record<string, Record<string, unknown>>)) {
        if (p === '/api/v1/events') continue; // a WebSocket; its plain GET is covered by the events tests
        const concrete = p.replace(/\{[^}]+\}/g, randomUUID());
        for (const method of Object.keys(methods)) {
          // Only reads and requests that cannot change anything (unknown ids, empty bodies).
          const res = await t.api(concrete, { method: method.toUpperCase(), headers: { 'content-type': 'application/json' }, body: method === 'get' ? undefined : '{}' });
          const text = await res.text();
          expect(res.status, `${method} ${p}`).toBeLessThan(500);
          if (res.status === 404) expect(JSON.parse(text).error.message, `${method} ${p}`).not.toMatch(/^no route for/);
        }
      }
    });
  });

  describe('authentication', () => {
    it.each([
      ['no Authorization header', undefined],
      ['a wrong token of the right length', 'Bearer WRONG'],
      ['a wrong, shorter token', 'Bearer nope'],
      ['a wrong, longer token', 'Bearer RIGHT-and-then-some-more-characters-0123456789'],
      ['the right token with the Basic scheme', 'Basic RIGHT'],
      ['an empty bearer', 'Bearer '],
      ['the right token plus extra words', 'Bearer RIGHT extra'],
    ])('answers 401 UNAUTHORIZED with WWW-Authenticate for %s', async (_label, header) => {
      const value = header
        ?.replace('WRONG', t.token.slice(0, -1) + (t.token.endsWith('x') ? 'y' : 'x'))
        .replace('RIGHT', t.token);
      if (header?.includes('WRONG')) expect(value!.length).toBe(`Bearer ${t.token}`.length);
      const res = await fetch(`${t.url}/api/v1/templates`, { headers: value === undefined ? {} : { authorization: value } });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      expect(await res.json()).toMatchObject({ error: { code: 'UNAUTHORIZED', message: expect.any(String) } });
    });

    it('accepts the right token with any case of the Bearer scheme', async () => {
      expect((await fetch(`${t.url}/api/v1/templates`, { headers: { authorization: `bearer ${t.token}` } })).status).toBe(200);
      expect((await fetch(`${t.url}/api/v1/templates`, { headers: { authorization: `Bearer ${t.token}` } })).status).toBe(200);
    });

    it('checks the token before routing, so unknown API paths are 401 without it', async () => {
      expect((await fetch(`${t.url}/api/v1/no-such-thing`)).status).toBe(401);
      expect((await fetch(`${t.url}/api/v1/openapi.json`)).status).toBe(401);
    });
  });

  describe('errors', () => {
    it('answers an unknown route with a 404 JSON error', async () => {
      for (const [method, p] of [
        ['GET', '/api/v1/no-such-thing'],
        ['POST', '/api/v1/templates/not-a-uuid/nothing'],
        ['PATCH', '/api/v1/templates'],
        ['POST', '/no-such-page-outside-the-api'],
      ] as const) {
        const res = await t.api(p, { method });
        expect(res.status, `${method} ${p}`).toBe(404);
        expect(res.headers.get('content-type')).toMatch(/^application\/json/);
        expect((await res.json()).error).toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining(p.split('?')[0]) });
      }
    });

    it.each([
      ['truncated JSON', '{"name": '],
      ['a bare word', 'hello'],
      ['a trailing comma', '{"name": "x",}'],
      ['an empty body', ''],
      ['whitespace only', '  \n '],
    ])('answers malformed JSON (%s) with 400 INVALID_JSON', async (_label, body) => {
      const res = await t.api('/api/v1/templates', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      expect(res.status).toBe(400);
      expect((await res.json()).error.code).toBe('INVALID_JSON');
    });

    it('answers valid JSON of the wrong shape with 400 naming the field', async () => {
      const wrongType = await t.json('POST', '/api/v1/templates', { name: 42 });
      expect(wrongType.status).toBe(400);
      expect(wrongType.body.error).toMatchObject({ code: 'VALIDATION_FAILED', message: expect.stringMatching(/^name/) });
      const missing = await t.json('POST', '/api/v1/templates', {});
      expect(missing.status).toBe(400);
      expect(missing.body.error.message).toMatch(/^name/);
      const array = await t.json('POST', '/api/v1/templates', '[1,2]');
      expect(array.status).toBe(400);
      expect(array.body.error.code).toBe('VALIDATION_FAILED');
    });

    it('answers a JSON body over the limit with 413 PAYLOAD_TOO_LARGE', async () => {
      const big = JSON.stringify({ name: 'big', description: 'x'.repeat(MAX_JSON_BODY_BYTES + 10) });
      const res = await t.api('/api/v1/templates', { method: 'POST', headers: { 'content-type': 'application/json' }, body: big });
      expect(res.status).toBe(413);
      expect((await res.json()).error.code).toBe('PAYLOAD_TOO_LARGE');
      // Nothing was created.
      const list = await t.json('GET', '/api/v1/templates');
      expect(list.body.map((x: any) => x.name)).not.toContain('big');
    });

    it('answers a chunked JSON body that never ends with 413 once it passes the limit, without reading it all', async () => {
      const chunk = Buffer.alloc(64 * 1024, 0x20); // JSON whitespace
      const r = await streamingPost(
        `${t.url}/api/v1/templates`,
        { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' },
        chunk,
        512 * 1024 * 1024,
      );
      expect(r.status).toBe(413);
      expect(JSON.parse(r.body).error.code).toBe('PAYLOAD_TOO_LARGE');
      // The server stopped well before the client could send half a gigabyte.
      expect(r.sentBytes).toBeLessThan(64 * 1024 * 1024);
    });

    it('keeps serving after all of the above', async () => {
      expect((await fetch(`${t.url}/healthz`)).status).toBe(200);
      expect((await t.json('GET', '/api/v1/templates')).status).toBe(200);
    });
  });
});
