// Encrypts secrets kept in the database (hosts' SSH private keys) with AES-256-GCM under one key: from
// THICKET_SECRET_KEY, or generated into <data>/secret.key on first start. A check value in the settings
// table makes a start with another key fail at once instead of at the first SSH connection.
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.ts';
import { SettingsRepository } from '../db/repositories/settings.repository.ts';

const KEY_FILE = 'secret.key';
const CHECK_SETTING = 'secrets.key_check';
const VERSION = 'v1';

export class SecretKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SecretKeyError';
  }
}

/** A 32-byte key written as 64 hex digits or as base64 of 32 bytes. */
export function parseSecretKey(text: string, source: string): Buffer {
  const t = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(t)) return Buffer.from(t, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(t)) {
    const b = Buffer.from(t, t.includes('-') || t.includes('_') ? 'base64url' : 'base64');
    if (b.length === 32) return b;
  }
  throw new SecretKeyError(`${source} must be 32 bytes written as 64 hex digits or base64`);
}

export class SecretBox {
  #key: Buffer;
  /** Set when this node's key is not the database's: every use fails with this reason. */
  unusable: string | undefined;
  constructor(key: Buffer) {
    if (key.length !== 32) throw new SecretKeyError('the secret key must be 32 bytes');
    this.#key = key;
  }

  #usable(): void {
    if (this.unusable) throw new SecretKeyError(this.unusable);
  }

  encrypt(plain: string): string {
    this.#usable();
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.#key, iv);
    const ct = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    return [VERSION, iv.toString('base64'), c.getAuthTag().toString('base64'), ct.toString('base64')].join(':');
  }

  decrypt(sealed: string): string {
    this.#usable();
    const [v, iv, tag, ct] = sealed.split(':');
    if (v !== VERSION || !iv || !tag || ct === undefined) throw new SecretKeyError('a stored secret has an unknown format');
    try {
      const d = createDecipheriv('aes-256-gcm', this.#key, Buffer.from(iv, 'base64'));
      d.setAuthTag(Buffer.from(tag, 'base64'));
      return Buffer.concat([d.update(Buffer.from(ct, 'base64')), d.final()]).toString('utf8');
    } catch {
      throw new SecretKeyError('a stored secret cannot be decrypted: THICKET_SECRET_KEY is not the key it was encrypted with');
    }
  }

  /** A keyed MAC for tokens derived from the secret key (host callback tokens). */
  mac(purpose: string, value: string): Buffer {
    this.#usable();
    return createHmac('sha256', this.#key).update(`${purpose}\0${value}`).digest();
  }

  checkValue(): string {
    return createHmac('sha256', this.#key).update('key-check\0thicket').digest('hex');
  }
}

/**
 * The key from THICKET_SECRET_KEY, else from <dataDir>/secret.key (created with mode 0600 when missing),
 * checked against the value stored by the first start that used the database.
 */
export async function loadSecretBox(db: Kysely<Database>, dataDir: string, configured: string | undefined): Promise<{ box: SecretBox; generatedKeyFile?: string }> {
  let key: Buffer;
  let generatedKeyFile: string | undefined;
  if (configured) {
    key = parseSecretKey(configured, 'THICKET_SECRET_KEY');
  } else {
    const file = path.join(dataDir, KEY_FILE);
    const existing = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (existing !== undefined) {
      key = parseSecretKey(existing, file);
    } else {
      key = randomBytes(32);
      // wx: two processes racing on one data directory cannot both write (the data-dir lock prevents it anyway).
      await writeFile(file, `${key.toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
      generatedKeyFile = file;
    }
  }
  const box = new SecretBox(key);
  const settings = new SettingsRepository();
  const check = box.checkValue();
  await settings.setIfAbsent(db, CHECK_SETTING, check);
  const stored = await settings.get<string>(db, CHECK_SETTING);
  if (!stored || stored.length !== check.length || !timingSafeEqual(Buffer.from(stored), Buffer.from(check))) {
    // Not a reason to refuse to start (two nodes started at once on one PostgreSQL database, each with its
    // own generated key, must both come up and serve storage): this node just cannot use the stored
    // secrets. SSH hooks with stored keys and host tokens fail on it, each with this message.
    box.unusable = `this node's secret key (${configured ? 'THICKET_SECRET_KEY' : path.join(dataDir, KEY_FILE)}) is not the one this database's secrets were encrypted with; set THICKET_SECRET_KEY on every node to the key of the node that started first`;
  }
  return { box, generatedKeyFile };
}
