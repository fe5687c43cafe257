import type { Executor } from './executor.ts';

export class SessionRepository {
  async insert(db: Executor, row: { id_sha256: string; csrf_token: string; expires_at: Date; token_sha256: string }): Promise<void> {
    await db.insertInto('sessions').values(row).execute();
  }

  get(db: Executor, idSha256: string): Promise<{ csrf_token: string; expires_at: Date; token_sha256: string | null } | undefined> {
    return db.selectFrom('sessions').select(['csrf_token', 'expires_at', 'token_sha256']).where('id_sha256', '=', idSha256).where('expires_at', '>', new Date()).executeTakeFirst();
  }

  async delete(db: Executor, idSha256: string): Promise<void> {
    await db.deleteFrom('sessions').where('id_sha256', '=', idSha256).execute();
  }

  async deleteExpired(db: Executor): Promise<number> {
    const r = await db.deleteFrom('sessions').where('expires_at', '<=', new Date()).executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}
