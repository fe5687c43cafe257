import { describe, expect, it } from 'vitest';
import { DataplaneError } from '../dataplane/client.ts';
import { toErrorResponse } from './error-response.ts';

describe('toErrorResponse for data-plane errors', () => {
  const logged: unknown[] = [];
  const log = (err: unknown) => logged.push(err);

  it('answers 409 CLONE_FAILED for a failed clone instead of a 500', () => {
    const r = toErrorResponse(new DataplaneError('CLONE_FAILED', 'clone c1 is failed: its map is damaged', 'CloneFailedError'), log);
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('CLONE_FAILED');
    expect(r.body.error.message).toContain('its map is damaged');
  });

  it('answers 409 FILE_MISSING when a replica image is gone, 507 when the pool is full', () => {
    expect(toErrorResponse(new DataplaneError('ENOENT', "ENOENT: no such file or directory, open '/p/replicas/r.img'", 'Error'), log)).toMatchObject({ status: 409, body: { error: { code: 'FILE_MISSING' } } });
    expect(toErrorResponse(new DataplaneError('OUT_OF_SPACE', 'the storage pool is full', 'OutOfSpaceError'), log).status).toBe(507);
  });

  it('keeps anything else a 500 and logs it', () => {
    const before = logged.length;
    expect(toErrorResponse(new DataplaneError('INTERNAL', 'boom', 'Error'), log).status).toBe(500);
    expect(logged.length).toBe(before + 1);
  });
});
