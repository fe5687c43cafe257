// The one control-plane error type. Services throw AppError with a stable code; api/error-handler.ts is
// the only place that turns a code into an HTTP status. Services never import Hono.

export const ERROR_CODES = {
  VALIDATION_FAILED: 400,
  INVALID_JSON: 400,
  INVALID_STORAGE_POOL_PATH: 400,
  UNAUTHORIZED: 401,
  CSRF_REJECTED: 403,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  STORAGE_POOL_NOT_FOUND: 404,
  TEMPLATE_NOT_FOUND: 404,
  TEMPLATE_VERSION_NOT_FOUND: 404,
  REPLICA_NOT_FOUND: 404,
  JOB_NOT_FOUND: 404,
  CLONE_NOT_FOUND: 404,
  HOST_NOT_FOUND: 404,
  SUBSYSTEM_NOT_FOUND: 404,
  NAMESPACE_NOT_FOUND: 404,
  DESKTOP_POOL_NOT_FOUND: 404,
  DESKTOP_NOT_FOUND: 404,
  SCHEDULE_NOT_FOUND: 404,
  CONFLICT: 409,
  NAME_TAKEN: 409,
  STORAGE_POOL_IN_USE: 409,
  REPLICA_IN_USE: 409,
  REPLICA_BUSY: 409,
  REPLICA_NOT_READY: 409,
  HOST_IN_USE: 409,
  CLONE_EXPORTED: 409,
  SUBSYSTEM_FULL: 409,
  DESKTOP_POOL_BUSY: 409,
  DESKTOPS_IN_USE: 409,
  NOTHING_TO_UNDO: 409,
  CLONE_FAILED: 409,
  FILE_MISSING: 409,
  HOST_HAS_NO_SSH: 409,
  HOST_KEY_NOT_PINNED: 409,
  HOST_KEY_MISMATCH: 409,
  SSH_KEY_UNREADABLE: 409,
  HOSTS_FULL: 409,
  JOB_FINISHED: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  IMAGE_INVALID: 422,
  IMAGE_TOO_LARGE: 422,
  INSUFFICIENT_SPACE: 507,
  INTERNAL: 500,
  HOST_UNREACHABLE: 502,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, details?: unknown, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AppError';
    this.code = code;
    this.details = details;
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
