import { Hono, type Context } from 'hono';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { z } from 'zod';
import { AppError } from '../../errors.ts';
import type { TokenVerifier } from '../auth.ts';
import type { RouteDoc } from '../openapi.ts';
import { SESSION_COOKIE, type SessionStore } from '../sessions.ts';
import { parseJsonBody } from '../validation.ts';

export const createSessionBody = z.strictObject({ token: z.string().min(1, 'is required').max(512) });

export const sessionDocs: RouteDoc[] = [
  {
    method: 'post',
    path: '/api/v1/session',
    tag: 'session',
    summary: 'Sign in: trade the admin token for an HttpOnly SameSite=Strict session cookie; returns the CSRF token to send as X-CSRF-Token',
    auth: false,
    body: createSessionBody,
    responses: { 201: 'session created (Set-Cookie)', 400: 'invalid body', 401: 'wrong token' },
  },
  { method: 'get', path: '/api/v1/session', tag: 'session', summary: 'The current session: its CSRF token and expiry', responses: { 200: 'session', 401: 'no session' } },
  { method: 'delete', path: '/api/v1/session', tag: 'session', summary: 'Sign out: the session ends and its cookie is cleared', responses: { 204: 'signed out', 401: 'no session', 403: 'missing CSRF token' } },
];

/** Cookies are marked Secure when the browser reached us over HTTPS (directly or through a proxy). */
function isHttps(c: Context): boolean {
  return c.req.header('x-forwarded-proto') === 'https' || new URL(c.req.url).protocol === 'https:';
}

export function sessionRoutes(sessions: SessionStore, auth: TokenVerifier): Hono {
  const app = new Hono();
  app.post('/', async (c) => {
    const body = await parseJsonBody(c, createSessionBody);
    if (!auth.verify(body.token)) throw new AppError('UNAUTHORIZED', 'the token is not valid');
    const session = await sessions.create(body.token);
    setCookie(c, SESSION_COOKIE, session.id, {
      httpOnly: true,
      sameSite: 'Strict',
      secure: isHttps(c),
      path: '/',
      expires: session.expiresAt,
    });
    return c.json({ csrfToken: session.csrfToken, expiresAt: session.expiresAt.toISOString() }, 201);
  });
  app.get('/', async (c) => {
    const session = await sessions.lookup(getCookie(c, SESSION_COOKIE));
    if (!session) throw new AppError('UNAUTHORIZED', 'no session; sign in first');
    return c.json({ csrfToken: session.csrfToken, expiresAt: session.expiresAt.toISOString() });
  });
  app.delete('/', async (c) => {
    await sessions.destroy(getCookie(c, SESSION_COOKIE));
    deleteCookie(c, SESSION_COOKIE, { path: '/', httpOnly: true, sameSite: 'Strict', secure: isHttps(c) });
    return c.body(null, 204);
  });
  return app;
}
