import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { hostToken, verifyHostToken } from './host-token.ts';
import { parseSecretKey, SecretBox, SecretKeyError } from './secret-box.ts';

describe('SecretBox', () => {
  it('decrypts what it encrypted, with a fresh IV each time', () => {
    const box = new SecretBox(randomBytes(32));
    const a = box.encrypt('-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n');
    const b = box.encrypt('-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n');
    expect(a).not.toBe(b);
    expect(a).not.toContain('OPENSSH');
    expect(box.decrypt(a)).toBe('-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n');
  });

  it('refuses another key and a tampered ciphertext with a clear error', () => {
    const sealed = new SecretBox(randomBytes(32)).encrypt('secret');
    expect(() => new SecretBox(randomBytes(32)).decrypt(sealed)).toThrow(/THICKET_SECRET_KEY is not the key/);
    const box = new SecretBox(randomBytes(32));
    const parts = box.encrypt('secret').split(':');
    parts[3] = Buffer.from('tampered').toString('base64');
    expect(() => box.decrypt(parts.join(':'))).toThrow(SecretKeyError);
  });

  it('reads keys as 64 hex digits or base64 of 32 bytes', () => {
    const key = randomBytes(32);
    expect(parseSecretKey(key.toString('hex'), 'k')).toEqual(key);
    expect(parseSecretKey(key.toString('base64'), 'k')).toEqual(key);
    expect(() => parseSecretKey('short', 'THICKET_SECRET_KEY')).toThrow(/THICKET_SECRET_KEY must be 32 bytes/);
  });
});

describe('host tokens', () => {
  it('name their host, and a token of another key or host id does not verify', () => {
    const box = new SecretBox(randomBytes(32));
    const id = '6f1c2a40-0000-4000-8000-000000000001';
    const token = hostToken(box, id);
    expect(verifyHostToken(box, token)).toBe(id);
    expect(verifyHostToken(new SecretBox(randomBytes(32)), token)).toBeUndefined();
    expect(verifyHostToken(box, token.replace(id, '6f1c2a40-0000-4000-8000-000000000002'))).toBeUndefined();
    expect(verifyHostToken(box, undefined)).toBeUndefined();
  });
});

describe('a node whose key is not the database\'s', () => {
  it('starts (the box loads) but every use of the box fails with the reason, and host tokens do not verify', async () => {
    const { openDatabase } = await import('../db/database.ts');
    const { migrate } = await import('../db/migrator.ts');
    const { mkdtempSync, rmSync } = await import('node:fs');
    const os = await import('node:os');
    const pathMod = await import('node:path');
    const { loadSecretBox } = await import('./secret-box.ts');
    const { hostToken, verifyHostToken } = await import('./host-token.ts');
    const dir = mkdtempSync(pathMod.join(os.tmpdir(), 'thicket-secret-'));
    const handle = await openDatabase({ pgliteDir: pathMod.join(dir, 'db') });
    try {
      await migrate(handle.db);
      const first = await loadSecretBox(handle.db, pathMod.join(dir, 'a'), '11'.repeat(32));
      expect(first.box.unusable).toBeUndefined();
      const token = hostToken(first.box, '00000000-0000-4000-8000-000000000001');
      const second = await loadSecretBox(handle.db, pathMod.join(dir, 'b'), '22'.repeat(32));
      expect(second.box.unusable).toContain('THICKET_SECRET_KEY');
      expect(() => second.box.encrypt('x')).toThrow(SecretKeyError);
      expect(verifyHostToken(second.box, token)).toBeUndefined();
      expect(verifyHostToken(first.box, token)).toBe('00000000-0000-4000-8000-000000000001');
    } finally {
      await handle.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
