// The one place where errors become HTTP responses.
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { AppError, ERROR_CODES, type ErrorCode } from '../errors.ts';

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
  log(err);
  return { status: 500, body: errorBody('INTERNAL', 'internal error; see the server log') };
}
