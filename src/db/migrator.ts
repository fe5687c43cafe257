// Applies migrations/NNNN_*.sql in order, each once, inside one transaction that holds a PostgreSQL
// advisory lock: a second process starting at the same time waits, then finds nothing left to do.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql, type Kysely } from 'kysely';
import type { Database } from './schema.ts';
import { splitSqlStatements } from './sql-script.ts';

export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../migrations');

// Any constant works; it only has to be the same in every Thicket process.
const MIGRATION_LOCK_KEY = 0x7468_6b74;

export interface Migration {
  name: string;
  sql: string;
}

export interface MigrationResult {
  applied: string[];
  alreadyApplied: string[];
}

export async function loadMigrations(dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f)).sort();
  return Promise.all(files.map(async (name) => ({ name, sql: await readFile(path.join(dir, name), 'utf8') })));
}

function checksum(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export async function migrate(db: Kysely<any>, migrations?: Migration[]): Promise<MigrationResult> {
  const list = migrations ?? (await loadMigrations());
  return db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`.execute(trx);
    await sql`CREATE TABLE IF NOT EXISTS schema_migrations (
      name text PRIMARY KEY,
      checksum text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`.execute(trx);
    const rows = await sql<{ name: string; checksum: string }>`SELECT name, checksum FROM schema_migrations`.execute(trx);
    const done = new Map(rows.rows.map((r) => [r.name, r.checksum]));
    const applied: string[] = [];
    const alreadyApplied: string[] = [];
    for (const migration of list) {
      const previous = done.get(migration.name);
      if (previous !== undefined) {
        if (previous !== checksum(migration.sql)) {
          throw new Error(`migration ${migration.name} was changed after it was applied; add a new migration instead`);
        }
        alreadyApplied.push(migration.name);
        continue;
      }
      for (const statement of splitSqlStatements(migration.sql)) {
        await sql.raw(statement).execute(trx);
      }
      await sql`INSERT INTO schema_migrations (name, checksum) VALUES (${migration.name}, ${checksum(migration.sql)})`.execute(trx);
      applied.push(migration.name);
    }
    return { applied, alreadyApplied };
  });
}

export type { Database };
