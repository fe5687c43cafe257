// GET /api/v1/events as a WebSocket. Live events are buffered while missed ones (?since=) are replayed
// from the database, then sent in order without gaps or duplicates.
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { EventBus, ThicketEvent } from '../control/events/event-bus.ts';
import { bearerToken, type TokenVerifier } from './auth.ts';
import type { Metrics } from './metrics.ts';
import { cookieValue, sameOrigin, SESSION_COOKIE, type SessionStore } from './sessions.ts';

const REPLAY_PAGE = 1000;
/** A client this far behind is disconnected; it reconnects with ?since= and catches up from the database. */
const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;
const PING_INTERVAL_MS = 30_000;
const SENT_REMEMBERED = 16_384;

export interface EventStreamDeps {
  auth: TokenVerifier;
  /** Browsers cannot set headers on a WebSocket: the web UI authenticates with its session cookie. */
  sessions?: SessionStore;
  /** Keep-alive ping (and session re-check) period; tests shorten it. */
  pingIntervalMs?: number;
  events: EventBus;
  metrics?: Metrics;
  log: (err: unknown) => void;
}

function reject(socket: Duplex, status: number, text: string, extraHeaders = ''): void {
  const body = JSON.stringify({ error: { code: status === 401 ? 'UNAUTHORIZED' : status === 404 ? 'NOT_FOUND' : 'VALIDATION_FAILED', message: text } });
  socket.end(
    `HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : status === 404 ? 'Not Found' : 'Bad Request'}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n${extraHeaders}\r\n${body}`,
  );
}

export function attachEventStream(server: Server, deps: EventStreamDeps): { close(): void } {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== '/api/v1/events') {
      reject(socket, 404, `no WebSocket endpoint at ${url.pathname}`);
      return;
    }
    void authenticate(req, url, deps).then(
      (auth) => {
        if (!auth.ok) {
          reject(socket, 401, 'missing or invalid token (Authorization: Bearer, ?token= or a session cookie from this origin)', 'WWW-Authenticate: Bearer\r\n');
          return;
        }
        upgrade(req, socket, head, url, auth.sessionId);
      },
      (err) => {
        deps.log(err);
        socket.destroy();
      },
    );
  });

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer, url: URL, sessionId: string | undefined): void => {
    const sinceRaw = url.searchParams.get('since');
    let since: number | undefined;
    if (sinceRaw !== null) {
      if (!/^\d{1,15}$/.test(sinceRaw)) {
        reject(socket, 400, 'since: must be a non-negative integer event sequence number');
        return;
      }
      since = Number(sinceRaw);
    }
    const types = url.searchParams.get('types')?.split(',').filter(Boolean);
    wss.handleUpgrade(req, socket, head, (ws) => serve(ws, since, types ? new Set(types) : undefined, deps, sessionId));
  };

  return {
    close() {
      for (const client of wss.clients) client.terminate();
      wss.close();
    },
  };
}

async function authenticate(req: IncomingMessage, url: URL, deps: EventStreamDeps): Promise<{ ok: boolean; sessionId?: string }> {
  const token = bearerToken(req.headers.authorization) ?? url.searchParams.get('token') ?? undefined;
  if (token !== undefined) return { ok: deps.auth.verify(token) };
  if (!deps.sessions) return { ok: false };
  // A page on another site could open this socket with our cookie (SameSite aside); Origin tells.
  if (!req.headers.origin || !sameOrigin(req.headers.origin, req.headers.host)) return { ok: false };
  const sessionId = cookieValue(req.headers.cookie, SESSION_COOKIE);
  return (await deps.sessions.lookup(sessionId)) !== undefined ? { ok: true, sessionId } : { ok: false };
}

function serve(ws: WebSocket, since: number | undefined, types: Set<string> | undefined, deps: EventStreamDeps, sessionId?: string): void {
  deps.metrics?.eventStreams.inc();
  // Events of other nodes can arrive after a higher seq of ours: send each seq once, in arrival order.
  let floor = since ?? -1;
  const sent = new Set<number>();
  let replaying = since !== undefined;
  const pending: ThicketEvent[] = [];
  let closed = false;

  const send = (event: ThicketEvent): void => {
    if (closed || event.seq <= floor || sent.has(event.seq)) return;
    sent.add(event.seq);
    if (sent.size > SENT_REMEMBERED) sent.delete(sent.values().next().value!);
    if (types && !types.has(event.type)) return;
    if (ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      ws.close(1013, 'client too slow; reconnect with ?since=');
      return;
    }
    ws.send(JSON.stringify(event));
  };

  const unsubscribe = deps.events.subscribe((event) => {
    if (replaying) pending.push(event);
    else send(event);
  });

  const ping = setInterval(() => {
    ws.ping();
    // A stream opened with a session ends with it (signed out in another tab, expired, token changed).
    if (sessionId !== undefined && deps.sessions) {
      deps.sessions.lookup(sessionId).then(
        (s) => {
          if (!s && !closed) ws.close(1008, 'session ended; sign in again');
        },
        deps.log,
      );
    }
  }, deps.pingIntervalMs ?? PING_INTERVAL_MS);
  ws.on('close', () => {
    closed = true;
    clearInterval(ping);
    unsubscribe();
    deps.metrics?.eventStreams.dec();
  });
  ws.on('error', () => {});
  // The stream is one-way; anything a client sends is ignored.
  ws.on('message', () => {});

  if (since === undefined) return;
  void (async () => {
    try {
      // A since beyond the newest event (the database was reset, or a client bug) would otherwise hide every
      // event until the sequence caught up: the stream starts from the newest one instead.
      const latest = await deps.events.latestSeq();
      if (since > latest) floor = latest;
      let cursor = Math.min(since, latest);
      for (let page = 0; page < 100_000 && !closed; page++) {
        const batch = await deps.events.since(cursor, REPLAY_PAGE);
        for (const event of batch) send(event);
        if (batch.length < REPLAY_PAGE) break;
        cursor = batch[batch.length - 1].seq;
      }
      replaying = false;
      for (const event of pending.splice(0)) send(event);
    } catch (err) {
      deps.log(err);
      ws.close(1011, 'replay failed');
    }
  })();
}
