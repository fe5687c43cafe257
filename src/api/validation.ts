// Request parsing: JSON bodies and ids are checked here, so a bad request becomes a 400/404 naming the
// field instead of reaching SQL.
import type { Context } from 'hono';
import { z } from 'zod';
import { AppError, type ErrorCode } from '../errors.ts';

export const MAX_JSON_BODY_BYTES = 1024 * 1024;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: string): boolean {
  return UUID_RE.test(value);
}

/** A path id that is not a UUID cannot name anything: answer 404 with the resource's code. */
export function idParam(c: Context, name: string, notFound: ErrorCode, what: string): string {
  const value = c.req.param(name) ?? '';
  if (!isUuid(value)) throw new AppError(notFound, `${what} ${value} does not exist`);
  return value.toLowerCase();
}

function fieldName(pathParts: ReadonlyArray<PropertyKey>): string {
  return pathParts.length ? pathParts.map(String).join('.') : '(body)';
}

export function formatZodError(error: z.ZodError, where: 'body' | 'query' = 'body'): { message: string; details: Array<{ field: string; message: string }> } {
  const details = error.issues.map((issue) => {
    const field = issue.path.length === 0 && where === 'query' ? '(query)' : fieldName(issue.path);
    let message = issue.message;
    if (issue.code === 'invalid_type' && /received undefined/.test(issue.message)) message = 'is required';
    else if (issue.code === 'unrecognized_keys') message = `unknown ${where === 'query' ? 'parameter' : 'field'}(s): ${issue.keys.join(', ')}`;
    return { field, message };
  });
  const first = details[0];
  return { message: first ? `${first.field}: ${first.message}` : 'invalid request', details };
}

export function parseWith<T extends z.ZodType>(schema: T, value: unknown, where: 'body' | 'query' = 'body'): z.infer<T> {
  const result = schema.safeParse(value);
  if (!result.success) {
    const { message, details } = formatZodError(result.error, where);
    throw new AppError('VALIDATION_FAILED', message, details);
  }
  return result.data;
}

export async function readJson(c: Context, options: { emptyAs?: unknown } = {}): Promise<unknown> {
  const declared = Number(c.req.header('content-length') ?? '0');
  if (declared > MAX_JSON_BODY_BYTES) throw new AppError('PAYLOAD_TOO_LARGE', `JSON bodies are limited to ${MAX_JSON_BODY_BYTES} bytes`);
  const text = await c.req.text();
  if (Buffer.byteLength(text) > MAX_JSON_BODY_BYTES) throw new AppError('PAYLOAD_TOO_LARGE', `JSON bodies are limited to ${MAX_JSON_BODY_BYTES} bytes`);
  if (text.trim() === '') {
    if ('emptyAs' in options) return options.emptyAs;
    throw new AppError('INVALID_JSON', 'the request body must be a JSON object');
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new AppError('INVALID_JSON', `the request body is not valid JSON: ${(err as Error).message}`);
  }
}

export async function parseJsonBody<T extends z.ZodType>(c: Context, schema: T): Promise<z.infer<T>> {
  return parseWith(schema, await readJson(c));
}

/** Like parseJsonBody, for endpoints whose fields are all optional: an empty body means {}. */
export async function parseOptionalJsonBody<T extends z.ZodType>(c: Context, schema: T): Promise<z.infer<T>> {
  return parseWith(schema, await readJson(c, { emptyAs: {} }));
}

export function parseQuery<T extends z.ZodType>(c: Context, schema: T): z.infer<T> {
  return parseWith(schema, c.req.query(), 'query');
}

export const uuidSchema = z.string().regex(UUID_RE, 'must be a UUID').transform((s) => s.toLowerCase());
export const nameSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(64, 'must be at most 64 characters')
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'may contain only letters, digits, ".", "_" and "-", starting with a letter or digit');

// A message for the wrong type only: a type-level message in zod 4 would also replace the range checks'
// own messages (so -1 for a size said "must be a number").
const numberTypeError = (iss: { code: string; input?: unknown }) => (iss.code === 'invalid_type' ? (iss.input === undefined ? 'is required' : 'must be a number') : undefined);

/** A JSON number field: "is required" / "must be a number" for the wrong type, zod's range messages otherwise. */
export const numberField = () => z.number({ error: numberTypeError });
/** A query-string number. */
export const queryNumber = () => z.coerce.number({ error: numberTypeError });
