import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_KINDS } from '../helpers/databases.ts';
import { startTestThicket, type TestThicket } from '../helpers/thicket.ts';

describe.each(DATABASE_KINDS)('Thicket start-up (%s)', (kind) => {
  let t: TestThicket;
  beforeAll(async () => {
    t = await startTestThicket(kind);
  });
  afterAll(async () => {
    await t?.destroy();
  });

  it('answers /healthz without a token', async () => {
    const res = await fetch(`${t.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok', database: kind });
  });

  it('creates the fast and capacity storage pools on first start', async () => {
    const { status, body } = await t.json('GET', '/api/v1/storage-pools');
    expect(status).toBe(200);
    expect(body.map((p: any) => [p.name, p.tier]).sort()).toEqual([
      ['capacity', 'capacity'],
      ['fast', 'fast'],
    ]);
  });

  it('rejects API requests without the admin token with 401', async () => {
    const res = await fetch(`${t.url}/api/v1/templates`);
    expect(res.status).toBe(401);
    expect((await res.json()).error.code).toBe('UNAUTHORIZED');
  });
});
