// Browser sessions: the admin token traded for an HttpOnly SameSite=Strict cookie, CSRF protection on
// state-changing requests, sign-out, and the event WebSocket authenticated by the cookie.
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

function sessionCookie(res: Response): string {
  const raw = res.headers.get('set-cookie') ?? '';
  return raw.split(';')[0];
}

async function signIn(t: TestThicket): Promise<{ cookie: string; csrf: string; raw: string }> {
  const res = await fetch(`${t.url}/api/v1/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: t.token }) });
  expect(res.status).toBe(201);
  const body = (await res.json()) as { csrfToken: string };
  return { cookie: sessionCookie(res), csrf: body.csrfToken, raw: res.headers.get('set-cookie') ?? '' };
}

function openEvents(url: string, headers: Record<string, string>): Promise<number | 'open'> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/api/v1/events`, { headers });
    const timer = setTimeout(() => {
      ws.terminate();
      resolve(-1);
    }, 10_000);
    ws.on('open', () => {
      clearTimeout(timer);
      ws.close();
      resolve('open');
    });
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      resolve(res.statusCode ?? 0);
    });
    ws.on('error', () => {});
  });
}

describe.each(DATABASE_KINDS)('browser sessions (%s)', (kind) => {
  let t: TestThicket;
  beforeAll(async () => {
    t = await startTestThicket(kind);
  });
  afterAll(async () => {
    await t?.destroy();
  });

  it('sets an HttpOnly SameSite=Strict cookie for the right token and refuses a wrong one', async () => {
    const { raw, csrf } = await signIn(t);
    expect(raw).toMatch(/thicket_session=[A-Za-z0-9_-]{43}/);
    expect(raw).toMatch(/HttpOnly/i);
    expect(raw).toMatch(/SameSite=Strict/i);
    expect(raw).toMatch(/Path=\//);
    expect(csrf.length).toBeGreaterThanOrEqual(24);
    const wrong = await fetch(`${t.url}/api/v1/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: 'nope-nope-nope-nope' }) });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('set-cookie')).toBeNull();
    const bad = await fetch(`${t.url}/api/v1/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(bad.status).toBe(400);
  });

  it('lets a session read, and change state only with its CSRF token from this origin', async () => {
    const { cookie, csrf } = await signIn(t);
    expect((await fetch(`${t.url}/api/v1/templates`, { headers: { cookie } })).status).toBe(200);
    const post = (headers: Record<string, string>) =>
      fetch(`${t.url}/api/v1/templates`, { method: 'POST', headers: { cookie, 'content-type': 'application/json', ...headers }, body: JSON.stringify({ name: `t-${Math.random().toString(36).slice(2, 8)}` }) });
    const noToken = await post({});
    expect(noToken.status).toBe(403);
    expect(((await noToken.json()) as { error: { code: string } }).error.code).toBe('CSRF_REJECTED');
    expect((await post({ 'x-csrf-token': 'x'.repeat(csrf.length) })).status).toBe(403);
    expect((await post({ 'x-csrf-token': csrf, origin: 'https://evil.example' })).status).toBe(403);
    expect((await post({ 'x-csrf-token': csrf, origin: t.url })).status).toBe(201);
    // A session's CSRF token is not a credential on its own.
    const stolen = await fetch(`${t.url}/api/v1/templates`, { method: 'POST', headers: { 'x-csrf-token': csrf, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'stolen' }) });
    expect(stolen.status).toBe(401);
  });

  it('returns the CSRF token of the current session, and ends the session on sign-out', async () => {
    const { cookie, csrf } = await signIn(t);
    const current = await fetch(`${t.url}/api/v1/session`, { headers: { cookie } });
    expect(((await current.json()) as { csrfToken: string }).csrfToken).toBe(csrf);
    expect((await fetch(`${t.url}/api/v1/session`, { method: 'DELETE', headers: { cookie } })).status).toBe(403);
    const out = await fetch(`${t.url}/api/v1/session`, { method: 'DELETE', headers: { cookie, 'x-csrf-token': csrf } });
    expect(out.status).toBe(204);
    expect(out.headers.get('set-cookie')).toMatch(/thicket_session=;.*Max-Age=0/i);
    expect((await fetch(`${t.url}/api/v1/templates`, { headers: { cookie } })).status).toBe(401);
    expect((await fetch(`${t.url}/api/v1/session`, { headers: { cookie } })).status).toBe(401);
  });

  it('refuses requests without a session or token, and a forged cookie', async () => {
    expect((await fetch(`${t.url}/api/v1/desktop-pools`)).status).toBe(401);
    expect((await fetch(`${t.url}/api/v1/desktop-pools`, { headers: { cookie: `thicket_session=${'A'.repeat(43)}` } })).status).toBe(401);
    expect((await fetch(`${t.url}/api/v1/desktop-pools`, { headers: { cookie: 'thicket_session=short' } })).status).toBe(401);
  });

  it('opens the event stream with the session cookie from this origin only', async () => {
    const { cookie } = await signIn(t);
    expect(await openEvents(t.url, { cookie, origin: t.url })).toBe('open');
    expect(await openEvents(t.url, { cookie, origin: 'https://evil.example' })).toBe(401);
    expect(await openEvents(t.url, { cookie })).toBe(401);
    expect(await openEvents(t.url, { origin: t.url })).toBe(401);
  });

  it('ends the sessions made with an admin token once that token is replaced', async () => {
    const { cookie } = await signIn(t);
    expect((await fetch(`${t.url}/api/v1/templates`, { headers: { cookie } })).status).toBe(200);
    const original = t.config.adminToken;
    const replacement = 'replacement-admin-token-0123456789';
    t.config.adminToken = replacement;
    t.token = replacement;
    try {
      await t.restart();
      expect((await fetch(`${t.url}/api/v1/templates`, { headers: { cookie } })).status).toBe(401);
      const fresh = await signIn(t);
      expect((await fetch(`${t.url}/api/v1/templates`, { headers: { cookie: fresh.cookie } })).status).toBe(200);
    } finally {
      t.config.adminToken = original;
      t.token = original!;
      await t.restart();
    }
  });

  it('serves the web UI at / and its routes, while unknown API paths stay JSON 404s', async () => {
    const root = await fetch(`${t.url}/`);
    expect(root.status).toBe(200);
    expect(root.headers.get('content-type')).toMatch(/text\/html/);
    expect(root.headers.get('content-security-policy')).toContain("default-src 'self'");
    const html = await root.text();
    expect(html).toContain('<div id="app">');
    const deep = await fetch(`${t.url}/pools/00000000-0000-0000-0000-000000000000`);
    expect(deep.status).toBe(200);
    expect(await deep.text()).toBe(html);
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)![1];
    const js = await fetch(`${t.url}${asset}`);
    expect(js.status).toBe(200);
    expect(js.headers.get('cache-control')).toContain('immutable');
    expect((await fetch(`${t.url}/assets/missing.js`)).status).toBe(404);
    const api404 = await t.api('/api/v1/nope');
    expect(api404.status).toBe(404);
    expect(((await api404.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
  });
});
