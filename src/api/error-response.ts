// The one place where errors become HTTP responses.
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { DataplaneError } from '../dataplane/client.ts';
import { AppError, ERROR_CODES, type ErrorCode } from '../errors.ts';
import { SecretKeyError } from '../hooks/secret-box.ts';

/**
 * Data-plane (engine) errors that an API request can run into through no fault of the server: the state of
 * a clone or a file, not a bug. Anything else from the data plane stays a 500.
 */
function fromDataplane(err: DataplaneError): { code: ErrorCode; message: string } | undefined {
  switch (err.code) {
    case 'CLONE_FAILED':
      return { code: 'CLONE_FAILED', message: `${err.message}; delete it and create a new clone` };
    case 'CLONE_CLOSED':
      return { code: 'CONFLICT', message: err.message };
    case 'OUT_OF_SPACE':
      return { code: 'INSUFFICIENT_SPACE', message: err.message };
    case 'ENOENT':
      return { code: 'FILE_MISSING', message: `a file the data plane needs is missing (${err.message}); verify the replica, which marks it corrupt` };
    default:
      return undefined;
  }
}

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

export function errorBody(code: string, message: string, details?: unknown): ErrorBody {
  return { error: details === undefined ? { code, message } : { code, message, details } };
}

export function toErrorResponse(err: unknown, log: (err: unknown) => void): { status: ContentfulStatusCode; body: ErrorBody } {
  if (err instanceof AppError) {
    return { status: ERROR_CODES[err.code] as ContentfulStatusCode, body: errorBody(err.code, err.message, err.details) };
  }
  if (err instanceof HTTPException) {
    const status = err.status as ContentfulStatusCode;
    const code: ErrorCode = status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 401 ? 'UNAUTHORIZED' : status < 500 ? 'VALIDATION_FAILED' : 'INTERNAL';
    return { status, body: errorBody(code, err.message || 'request rejected') };
  }
  // A node whose secret key is not the database's cannot store or read SSH keys: the operator's to fix.
  if (err instanceof SecretKeyError) return { status: 409, body: errorBody('CONFLICT', err.message) };
  if (err instanceof DataplaneError) {
    const known = fromDataplane(err);
    if (known) return { status: ERROR_CODES[known.code] as ContentfulStatusCode, body: errorBody(known.code, known.message) };
  }
  log(err);
  return { status: 500, body: errorBody('INTERNAL', 'internal error; see the server log') };
}
