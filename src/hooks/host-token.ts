// Tokens that hypervisor hosts use to report VM events: "thh.<host id>.<MAC>", derived from the secret
// key, so nothing is stored and a token names its host. Such a token may only post desktop state.
import { timingSafeEqual } from 'node:crypto';
import type { SecretBox } from './secret-box.ts';

const PURPOSE = 'host-callback-token';
const FORMAT = /^thh\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.([A-Za-z0-9_-]{43})$/;

export function hostToken(box: SecretBox, hostId: string): string {
  return `thh.${hostId}.${box.mac(PURPOSE, hostId).toString('base64url')}`;
}

/** The host id a token was made for, or undefined. */
export function verifyHostToken(box: SecretBox, token: string | undefined): string | undefined {
  const m = token ? FORMAT.exec(token) : null;
  if (!m) return undefined;
  if (box.unusable) return undefined; // this node cannot check tokens (see SecretBox.unusable)
  const expected = box.mac(PURPOSE, m[1]);
  const given = Buffer.from(m[2], 'base64url');
  return given.length === expected.length && timingSafeEqual(given, expected) ? m[1] : undefined;
}
