// The Hono application: auth, routes, error mapping. No business logic lives here.
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { EventBus } from '../control/events/event-bus.ts';
import type { JobService } from '../control/jobs/job.service.ts';
import type { TemplateService } from '../control/registry/template.service.ts';
import type { ReplicaService } from '../control/replicas/replica.service.ts';
import type { StoragePoolService } from '../control/storage-pools/storage-pool.service.ts';
import type { CloneService } from '../control/clones/clone.service.ts';
import { cloneDocs, cloneRoutes } from './routes/clones.routes.ts';
import type { ExportService } from '../control/exports/export.service.ts';
import { exportDocs, hostRoutes, subsystemRoutes } from './routes/exports.routes.ts';
import type { DesktopPoolService } from '../control/desktop-pools/desktop-pool.service.ts';
import { desktopPoolDocs, desktopPoolRoutes } from './routes/desktop-pools.routes.ts';
import type { ScheduleService } from '../control/schedules/schedule.service.ts';
import { poolScheduleRoutes, scheduleDocs, scheduleRoutes } from './routes/schedules.routes.ts';
import { AppError } from '../errors.ts';
import { getCookie } from 'hono/cookie';
import { bearerToken, type TokenVerifier } from './auth.ts';
import { CSRF_HEADER, csrfMatches, sameOrigin, SESSION_COOKIE, type SessionStore } from './sessions.ts';
import { sessionDocs, sessionRoutes } from './routes/session.routes.ts';
import { webUi } from './web-ui.ts';
import { errorBody, toErrorResponse } from './error-response.ts';
import type { Metrics } from './metrics.ts';
import { buildOpenApi, type RouteDoc } from './openapi.ts';
import { MAX_JSON_BODY_BYTES } from './validation.ts';
import { jobDocs, jobRoutes } from './routes/jobs.routes.ts';
import { replicaDocs, replicaRoutes } from './routes/replicas.routes.ts';
import { storagePoolDocs, storagePoolRoutes } from './routes/storage-pools.routes.ts';
import { templateDocs, templateRoutes } from './routes/templates.routes.ts';

export interface AppDeps {
  version: string;
  auth: TokenVerifier;
  sessions: SessionStore;
  /** Directory of the built web UI (web/dist); absent: `/` explains how to build it. */
  webRoot?: string;
  metrics: Metrics;
  events: EventBus;
  storagePools: StoragePoolService;
  templates: TemplateService;
  replicas: ReplicaService;
  clones: CloneService;
  exports: ExportService;
  desktopPools: DesktopPoolService;
  schedules: ScheduleService;
  jobs: JobService;
  /** The host id a hypervisor host's callback token was made for (hooks enabled), else undefined. */
  verifyHostToken?(token: string | undefined): string | undefined;
  health(): Promise<{ ok: boolean; database: string; detail?: string }>;
  logError(err: unknown): void;
}

const systemDocs: RouteDoc[] = [
  { method: 'get', path: '/healthz', tag: 'system', summary: 'Liveness and database reachability (no auth)', auth: false, responses: { 200: 'healthy', 503: 'database unreachable' } },
  { method: 'get', path: '/metrics', tag: 'system', summary: 'Prometheus metrics (text format)', auth: false, responses: { 200: 'metrics' } },
  { method: 'get', path: '/api/v1/openapi.json', tag: 'system', summary: 'This document', responses: { 200: 'OpenAPI 3.1' } },
  {
    method: 'get',
    path: '/api/v1/events',
    tag: 'events',
    summary: 'WebSocket stream of JSON events {seq, type, at, ...}; token in Authorization or ?token=; ?since=<seq> replays missed events',
    responses: { 101: 'switching protocols', 401: 'bad token', 426: 'not a WebSocket upgrade' },
  },
];

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export function allRouteDocs(): RouteDoc[] {
  return [...systemDocs, ...sessionDocs, ...storagePoolDocs, ...templateDocs, ...replicaDocs, ...cloneDocs, ...exportDocs, ...desktopPoolDocs, ...scheduleDocs, ...jobDocs];
}

export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  const openapi = buildOpenApi(allRouteDocs(), deps.version);

  app.use('*', async (c, next) => {
    const started = performance.now();
    await next();
    const route = c.req.routePath || 'unmatched';
    deps.metrics.httpRequests.inc({ method: c.req.method, route, status: String(c.res.status) });
    deps.metrics.httpDuration.observe({ method: c.req.method, route }, (performance.now() - started) / 1000);
  });

  app.get('/healthz', async (c) => {
    const h = await deps.health();
    return c.json({ status: h.ok ? 'ok' : 'degraded', database: h.database, ...(h.detail ? { detail: h.detail } : {}) }, h.ok ? 200 : 503);
  });

  app.get('/metrics', async (c) => {
    const text = await deps.metrics.registry.metrics();
    return c.text(text, 200, { 'content-type': deps.metrics.registry.contentType });
  });

  // Scripts authenticate with a bearer token; the web UI with its session cookie, and then every
  // state-changing request must also carry the session's CSRF token and come from our own origin.
  // A hypervisor host's token may only report the state of desktops (checked against placement there).
  const hostCallback = /^\/api\/v1\/desktop-pools\/[^/]+\/desktops\/[^/]+\/state$/;
  app.use('/api/*', async (c, next) => {
    if (c.req.path === '/api/v1/session' && c.req.method === 'POST') return next();
    const authorization = c.req.header('authorization');
    if (authorization !== undefined) {
      const token = bearerToken(authorization);
      if (!deps.auth.verify(token)) {
        const hostId = deps.verifyHostToken?.(token);
        if (!hostId || c.req.method !== 'POST' || !hostCallback.test(c.req.path)) throw new AppError('UNAUTHORIZED', 'missing or invalid bearer token');
        c.set('callerHostId' as never, hostId as never);
      }
      return next();
    }
    const session = await deps.sessions.lookup(getCookie(c, SESSION_COOKIE));
    if (!session) throw new AppError('UNAUTHORIZED', 'missing or invalid bearer token or session; sign in first');
    if (!SAFE_METHODS.has(c.req.method)) {
      if (!sameOrigin(c.req.header('origin'), c.req.header('host'))) throw new AppError('CSRF_REJECTED', 'cross-origin request refused');
      if (!csrfMatches(session, c.req.header(CSRF_HEADER))) throw new AppError('CSRF_REJECTED', `missing or wrong ${CSRF_HEADER} header for this session`);
    }
    return next();
  });

  // Only image uploads may be large. Every other body is cut off as soon as it passes the JSON limit, also
  // when it is chunked and declares no length, instead of being read whole into memory first.
  const limitBody = bodyLimit({
    maxSize: MAX_JSON_BODY_BYTES,
    onError: () => {
      throw new AppError('PAYLOAD_TOO_LARGE', `JSON bodies are limited to ${MAX_JSON_BODY_BYTES} bytes`);
    },
  });
  app.use('/api/*', async (c, next) => {
    const contentType = (c.req.header('content-type') ?? '').split(';')[0].trim().toLowerCase();
    const upload = /^\/api\/v1\/templates\/[^/]+\/versions\/?$/.test(c.req.path) && (contentType === 'application/octet-stream' || contentType === '');
    return upload ? next() : limitBody(c, next);
  });

  app.get('/api/v1/openapi.json', (c) => c.json(openapi));
  app.get('/api/v1/events', (c) => c.json(errorBody('UPGRADE_REQUIRED', 'this endpoint is a WebSocket; send an Upgrade: websocket request'), 426));
  app.route('/api/v1/session', sessionRoutes(deps.sessions, deps.auth));
  app.route('/api/v1/storage-pools', storagePoolRoutes(deps.storagePools));
  app.route('/api/v1/templates', templateRoutes(deps.templates));
  app.route('/api/v1/replicas', replicaRoutes(deps.replicas));
  app.route('/api/v1/clones', cloneRoutes(deps.clones));
  app.route('/api/v1/hosts', hostRoutes(deps.exports));
  app.route('/api/v1/subsystems', subsystemRoutes(deps.exports));
  app.route('/api/v1/desktop-pools', desktopPoolRoutes(deps.desktopPools));
  app.route('/api/v1/desktop-pools', poolScheduleRoutes(deps.schedules));
  app.route('/api/v1/schedules', scheduleRoutes(deps.schedules));
  app.route('/api/v1/jobs', jobRoutes(deps.jobs));

  app.route('/', webUi(deps.webRoot));

  app.notFound((c) => c.json(errorBody('NOT_FOUND', `no route for ${c.req.method} ${c.req.path}`), 404));
  app.onError((err, c) => {
    const { status, body } = toErrorResponse(err, deps.logError);
    if (status === 401) c.header('WWW-Authenticate', 'Bearer');
    // The rest of an oversized body is never read: tell the client this connection cannot be reused.
    if (status === 413) c.header('Connection', 'close');
    return c.json(body, status);
  });
  return app;
}
