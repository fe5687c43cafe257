import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface StreamEvent {
  seq: number;
  type: string;
  at: string;
  [field: string]: unknown;
}

interface Stream {
  ws: WebSocket;
  events: StreamEvent[];
  /** Waits until `predicate` holds for the events received so far (bounded). */
  until(what: string, predicate: (events: StreamEvent[]) => boolean, timeoutMs?: number): Promise<StreamEvent[]>;
  close(): Promise<void>;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 5_000 && Date.now() < deadline; i++) {
    if (check()) return;
    await sleep(10);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Opens the event stream; resolves once the upgrade succeeded, rejects with the HTTP status otherwise. */
function openStream(url: string, options: WebSocket.ClientOptions = {}): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: 5_000, ...options });
    const events: StreamEvent[] = [];
    ws.on('message', (data) => events.push(JSON.parse(String(data))));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (b: Buffer) => (body += b));
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body, headers: res.headers })));
    });
    ws.once('error', reject);
    ws.once('open', () =>
      resolve({
        ws,
        events,
        async until(what, predicate, timeoutMs = 10_000) {
          await waitFor(what, () => predicate(events), timeoutMs);
          return events;
        },
        close() {
          if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
          return new Promise<void>((done) => {
            ws.once('close', () => done());
            ws.close();
          });
        },
      }),
    );
  });
}

async function rejectedStatus(url: string, options: WebSocket.ClientOptions = {}): Promise<{ status: number; body: any; headers: Record<string, unknown> }> {
  try {
    const s = await openStream(url, options);
    await s.close();
  } catch (err) {
    const e = err as { status?: number; body?: string; headers?: Record<string, unknown> };
    if (e.status === undefined) throw err;
    return { status: e.status, body: e.body ? JSON.parse(e.body) : undefined, headers: e.headers ?? {} };
  }
  throw new Error(`the upgrade to ${url} succeeded`);
}

describe.each(DATABASE_KINDS)('event stream /api/v1/events (%s)', (kind) => {
  let t: TestThicket;
  let wsBase: string;
  const open: Stream[] = [];
  let counter = 0;

  beforeAll(async () => {
    t = await startTestThicket(kind);
    wsBase = t.url.replace(/^http/, 'ws') + '/api/v1/events';
  });

  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
  });

  afterAll(async () => {
    await t?.destroy();
  });

  const stream = async (query = '', options: WebSocket.ClientOptions = { headers: { authorization: `Bearer ${t.token}` } }) => {
    const s = await openStream(`${wsBase}${query}`, options);
    open.push(s);
    return s;
  };

  const createTemplate = async (): Promise<string> => {
    const name = `evt-${kind}-${++counter}`;
    const { status, body } = await t.json('POST', '/api/v1/templates', { name });
    expect(status).toBe(201);
    return body.id;
  };

  const createdFor = (events: StreamEvent[], ids: string[]) =>
    ids.map((id) => events.find((e) => e.type === 'template.created' && e.templateId === id));

  it('refuses an upgrade without a token with 401 and a JSON error', async () => {
    const r = await rejectedStatus(wsBase, {});
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('UNAUTHORIZED');
    expect(r.headers['www-authenticate']).toBe('Bearer');
  });

  it('refuses a wrong token in the header or the query with 401', async () => {
    const wrongSameLength = t.token.replace(/.$/, (c) => (c === 'x' ? 'y' : 'x'));
    expect((await rejectedStatus(wsBase, { headers: { authorization: `Bearer ${wrongSameLength}` } })).status).toBe(401);
    expect((await rejectedStatus(`${wsBase}?token=${encodeURIComponent(wrongSameLength)}`)).status).toBe(401);
    expect((await rejectedStatus(`${wsBase}?token=short`)).status).toBe(401);
    expect((await rejectedStatus(wsBase, { headers: { authorization: `Basic ${t.token}` } })).status).toBe(401);
  });

  it('accepts the token in the Authorization header and streams live events with seq, type and at', async () => {
    const s = await stream();
    const id = await createTemplate();
    const [event] = createdFor(await s.until('template.created', (ev) => createdFor(ev, [id])[0] !== undefined), [id]);
    expect(event).toMatchObject({ type: 'template.created', templateId: id, seq: expect.any(Number) });
    expect(Number.isInteger(event!.seq)).toBe(true);
    expect(event!.seq).toBeGreaterThan(0);
    expect(new Date(event!.at).toISOString()).toBe(event!.at);
    expect(Math.abs(Date.now() - Date.parse(event!.at))).toBeLessThan(60_000);
  });

  it('accepts the token as ?token= and streams live events', async () => {
    const s = await stream(`?token=${encodeURIComponent(t.token)}`, {});
    const id = await createTemplate();
    await s.until('template.created', (ev) => createdFor(ev, [id])[0] !== undefined);
  });

  it('delivers live events in ascending seq order without duplicates', async () => {
    const s = await stream();
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push(await createTemplate());
    const events = await s.until('8 template.created events', (ev) => createdFor(ev, ids).every(Boolean));
    const seqs = events.map((e) => e.seq);
    expect(seqs).toEqual([...new Set(seqs)].sort((a, b) => a - b));
  });

  it('replays exactly the events missed while disconnected, in order, then continues live', async () => {
    const first = await stream();
    const before = await createTemplate();
    const [seen] = createdFor(await first.until('first event', (ev) => createdFor(ev, [before])[0] !== undefined), [before]);
    const lastSeq = first.events.at(-1)!.seq;
    expect(lastSeq).toBeGreaterThanOrEqual(seen!.seq);
    await first.close();

    const missed: string[] = [];
    for (let i = 0; i < 5; i++) missed.push(await createTemplate());

    const again = await stream(`?since=${lastSeq}`);
    await again.until('the replay', (ev) => createdFor(ev, missed).every(Boolean));
    const live = await createTemplate();
    const events = await again.until('the live event', (ev) => createdFor(ev, [live])[0] !== undefined);

    const seqs = events.map((e) => e.seq);
    expect(seqs[0]).toBeGreaterThan(lastSeq);
    expect(seqs).toEqual([...new Set(seqs)].sort((a, b) => a - b));
    // Nothing the first connection had already seen comes again.
    expect(events.some((e) => e.templateId === before)).toBe(false);
    // The missed templates arrive in creation order, then the live one.
    const order = events.filter((e) => e.type === 'template.created').map((e) => e.templateId);
    expect(order).toEqual([...missed, live]);
  });

  it('replays without gaps or duplicates while events keep being published during the replay', async () => {
    const anchor = await stream();
    const start = await createTemplate();
    await anchor.until('anchor event', (ev) => createdFor(ev, [start])[0] !== undefined);
    const since = anchor.events.at(-1)!.seq;
    await anchor.close();

    // Enough backlog that the replay takes a moment, and more events racing with the reconnect.
    const backlog: string[] = [];
    for (let i = 0; i < 15; i++) backlog.push(await createTemplate());
    const racing = Promise.all(Array.from({ length: 15 }, () => createTemplate()));
    const s = await stream(`?since=${since}`);
    const raced = await racing;
    const all = [...backlog, ...raced];
    const received = await s.until('all 30 events', (ev) => createdFor(ev, all).every(Boolean));
    await sleep(100); // anything duplicated would arrive now

    // The authoritative list: a fresh replay from the same point after everything settled.
    const reference = await stream(`?since=${since}`);
    await reference.until('the reference replay', (ev) => createdFor(ev, all).every(Boolean));
    await sleep(100);

    const seqs = received.map((e) => e.seq);
    expect(seqs).toEqual([...new Set(seqs)].sort((a, b) => a - b));
    expect(seqs).toEqual(reference.events.map((e) => e.seq));
  });

  it('?since=0 replays from the first event', async () => {
    const id = await createTemplate();
    const s = await stream('?since=0');
    const events = await s.until('the replay', (ev) => createdFor(ev, [id])[0] !== undefined);
    expect(events[0].seq).toBe(1);
  });

  it('a ?since= beyond the newest event streams from the newest one instead of staying silent', async () => {
    const s = await stream('?since=999999999');
    const id = await createTemplate();
    await s.until('the live event', (ev) => createdFor(ev, [id])[0] !== undefined);
  });

  it('?types= limits the stream to the listed event types', async () => {
    const s = await stream('?types=template.deleted');
    const id = await createTemplate();
    expect((await t.json('DELETE', `/api/v1/templates/${id}`)).status).toBe(204);
    const events = await s.until('template.deleted', (ev) => ev.some((e) => e.templateId === id));
    expect(events.map((e) => e.type)).toEqual(['template.deleted']);
  });

  it.each(['abc', '-1', '1.5', '', '1e3'])('?since=%s is refused with 400', async (since) => {
    const r = await rejectedStatus(`${wsBase}?since=${since}`, { headers: { authorization: `Bearer ${t.token}` } });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/^since/);
  });

  it('refuses an upgrade on any other path with 404', async () => {
    const r = await rejectedStatus(t.url.replace(/^http/, 'ws') + '/api/v1/other', { headers: { authorization: `Bearer ${t.token}` } });
    expect(r.status).toBe(404);
  });

  it('GET /api/v1/events without an upgrade is a 426 JSON error', async () => {
    const res = await t.api('/api/v1/events');
    expect(res.status).toBe(426);
    expect((await res.json()).error.code).toBe('UPGRADE_REQUIRED');
  });

  it('GET /api/v1/events without a token is a 401 before anything else', async () => {
    const res = await fetch(`${t.url}/api/v1/events`);
    expect(res.status).toBe(401);
  });
});
