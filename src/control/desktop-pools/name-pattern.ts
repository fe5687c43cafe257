// Desktop names from a pattern such as "win11-{n:000}" (zero-padded to three digits) or "lab-{n}".
import { AppError } from '../../errors.ts';

export interface NamePattern {
  prefix: string;
  suffix: string;
  width: number;
}

const PLACEHOLDER = /\{n(?::(0+))?\}/g;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function parseNamePattern(pattern: string): NamePattern {
  const matches = [...pattern.matchAll(PLACEHOLDER)];
  if (matches.length !== 1) {
    throw new AppError('VALIDATION_FAILED', 'namePattern: must contain exactly one {n} or {n:000} placeholder', { field: 'namePattern' });
  }
  const m = matches[0];
  const prefix = pattern.slice(0, m.index);
  const suffix = pattern.slice(m.index! + m[0].length);
  const sample = `${prefix}1${suffix}`;
  if (!NAME.test(sample) || sample.length > 48) {
    throw new AppError('VALIDATION_FAILED', 'namePattern: names may contain only letters, digits, ".", "_" and "-", start with a letter or digit, and be at most 48 characters', {
      field: 'namePattern',
    });
  }
  return { prefix, suffix, width: m[1]?.length ?? 0 };
}

export function desktopName(p: NamePattern, n: number): string {
  return `${p.prefix}${String(n).padStart(p.width, '0')}${p.suffix}`;
}

/** Refuses a pool size whose widest desktop name (that of desktop `size`) would pass 48 characters. */
export function checkNamesFit(p: NamePattern, size: number): void {
  const widest = desktopName(p, Math.max(1, size));
  if (widest.length > 48) {
    throw new AppError('VALIDATION_FAILED', `namePattern: desktop ${size} would be named "${widest}", ${widest.length} characters; names are at most 48`, { field: 'namePattern' });
  }
}
