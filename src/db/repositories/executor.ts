import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../schema.ts';

/** A repository method runs on the database or inside a caller's transaction. */
export type Executor = Kysely<Database> | Transaction<Database>;

/** PostgreSQL's unique_violation; services turn it into a 409. */
export function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === '23505';
}

export function isForeignKeyViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === '23503';
}
