// Bearer-token authentication. Only a sha256 of the admin token is kept (database or memory); a request's
// token is hashed and compared in constant time.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.ts';
import { SettingsRepository } from '../db/repositories/settings.repository.ts';

const ADMIN_TOKEN_KEY = 'auth.admin_token_sha256';

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export class TokenVerifier {
  #hashes: Buffer[];
  constructor(hashes: Buffer[]) {
    this.#hashes = hashes;
  }

  verify(candidate: string | undefined): boolean {
    if (!candidate) return false;
    const h = hashToken(candidate);
    let ok = false;
    // Compare against every hash, never stopping early, so timing reveals nothing about which matched.
    for (const stored of this.#hashes) ok = timingSafeEqual(h, stored) || ok;
    return ok;
  }

  /** Whether a token with this sha256 (hex) is still accepted; sessions made with another one end. */
  acceptsHash(sha256Hex: string | null): boolean {
    if (!sha256Hex || !/^[0-9a-f]{64}$/.test(sha256Hex)) return false;
    const h = Buffer.from(sha256Hex, 'hex');
    let ok = false;
    for (const stored of this.#hashes) ok = timingSafeEqual(h, stored) || ok;
    return ok;
  }
}

export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

/**
 * Returns the verifier for the admin token. With THICKET_ADMIN_TOKEN set, that token is the admin token.
 * Otherwise the first start generates one, stores its hash and returns the token itself once in
 * `generatedToken` so the caller can print it.
 */
export async function loadAdminToken(db: Kysely<Database>, configured: string | undefined): Promise<{ verifier: TokenVerifier; generatedToken?: string }> {
  if (configured) return { verifier: new TokenVerifier([hashToken(configured)]) };
  const settings = new SettingsRepository();
  const existing = await settings.get<string>(db, ADMIN_TOKEN_KEY);
  if (existing) return { verifier: new TokenVerifier([Buffer.from(existing, 'hex')]) };
  const token = `thk_${randomBytes(32).toString('base64url')}`;
  const won = await settings.setIfAbsent(db, ADMIN_TOKEN_KEY, hashToken(token).toString('hex'));
  if (!won) {
    // Another process started at the same moment and its token won.
    const stored = await settings.get<string>(db, ADMIN_TOKEN_KEY);
    return { verifier: new TokenVerifier([Buffer.from(stored!, 'hex')]) };
  }
  return { verifier: new TokenVerifier([hashToken(token)]), generatedToken: token };
}
