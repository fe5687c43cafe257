// Every database test runs against both engines Thicket supports: embedded PGlite and the PostgreSQL
// server on 127.0.0.1:5432. Each test gets a database of its own.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openDatabase, type DatabaseHandle } from '../../src/db/database.ts';
import { migrate } from '../../src/db/migrator.ts';

export const DATABASE_KINDS = ['pglite', 'postgres'] as const;
export type DatabaseKind = (typeof DATABASE_KINDS)[number];

export const POSTGRES_ADMIN_URL = process.env.THICKET_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  kind: DatabaseKind;
  /** postgres:// URL of the fresh database; undefined for PGlite. */
  url: string | undefined;
  drop(): Promise<void>;
}

/** Creates an empty PostgreSQL database and returns its URL (PGlite needs nothing: a new data dir is new). */
export async function createTestDatabase(kind: DatabaseKind): Promise<TestDatabase> {
  if (kind === 'pglite') return { kind, url: undefined, drop: async () => {} };
  const name = `thicket_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    kind,
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** A migrated database handle for repository-level tests. */
export async function openTestDatabase(kind: DatabaseKind): Promise<DatabaseHandle & { drop(): Promise<void> }> {
  const test = await createTestDatabase(kind);
  const handle = await openDatabase(test.url ? { url: test.url } : {});
  await migrate(handle.db);
  return {
    ...handle,
    async close() {
      await handle.close();
    },
    async drop() {
      await handle.close().catch(() => {});
      await test.drop();
    },
  };
}
