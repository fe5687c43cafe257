// Browser sessions: the web UI trades the admin token for a random session id in an HttpOnly,
// SameSite=Strict cookie, so the token never sits in page-readable storage. Each session has its own
// CSRF token, which state-changing requests authenticated by the cookie must echo in a header.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.ts';
import { SessionRepository } from '../db/repositories/session.repository.ts';
import { hashToken, type TokenVerifier } from './auth.ts';

export const SESSION_COOKIE = 'thicket_session';
export const CSRF_HEADER = 'x-csrf-token';
export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;

export interface Session {
  csrfToken: string;
  expiresAt: Date;
}

function sha256(id: string): string {
  return createHash('sha256').update(id, 'utf8').digest('hex');
}

export class SessionStore {
  #db: Kysely<Database>;
  #repo = new SessionRepository();
  #ttlMs: number;
  #auth: TokenVerifier;

  constructor(db: Kysely<Database>, auth: TokenVerifier, ttlMs = SESSION_TTL_MS) {
    this.#db = db;
    this.#auth = auth;
    this.#ttlMs = ttlMs;
  }

  /** A session for a token the caller has verified; it lasts while that token stays valid. */
  async create(token: string): Promise<Session & { id: string }> {
    const id = randomBytes(32).toString('base64url');
    const csrfToken = randomBytes(24).toString('base64url');
    const expiresAt = new Date(Date.now() + this.#ttlMs);
    await this.#repo.insert(this.#db, { id_sha256: sha256(id), csrf_token: csrfToken, expires_at: expiresAt, token_sha256: hashToken(token).toString('hex') });
    return { id, csrfToken, expiresAt };
  }

  async lookup(id: string | undefined): Promise<Session | undefined> {
    // Ids are 43 base64url characters; anything else cannot be ours and costs no query.
    if (!id || !/^[A-Za-z0-9_-]{43}$/.test(id)) return undefined;
    const row = await this.#repo.get(this.#db, sha256(id));
    // Made with a token that is no longer accepted (the admin token was changed): the session is over.
    if (!row || !this.#auth.acceptsHash(row.token_sha256)) return undefined;
    return { csrfToken: row.csrf_token, expiresAt: new Date(row.expires_at) };
  }

  async destroy(id: string | undefined): Promise<void> {
    if (id) await this.#repo.delete(this.#db, sha256(id));
  }

  prune(): Promise<number> {
    return this.#repo.deleteExpired(this.#db);
  }
}

export function csrfMatches(session: Session, presented: string | undefined): boolean {
  if (!presented) return false;
  const a = Buffer.from(session.csrfToken);
  const b = Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Reads one cookie from a Cookie header (for the WebSocket upgrade, which bypasses Hono). */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * A cookie-authenticated request from another site must not count: browsers send Origin on
 * cross-origin requests and WebSocket upgrades, and it must then name this server.
 */
export function sameOrigin(origin: string | undefined, host: string | undefined): boolean {
  if (!origin) return true;
  if (!host) return false;
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}
