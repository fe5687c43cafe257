// Splits a plain SQL migration file into statements. PGlite's extended-protocol query() runs one statement
// at a time, so both databases get the same statement list. The scanner follows PostgreSQL's lexer where
// it matters for finding semicolons: line and (nested) block comments, '...' strings (with E'...'
// backslash escapes), "..." identifiers and $tag$...$tag$ bodies, which never start inside an identifier.

const IDENT_CHAR = /[A-Za-z0-9_$\u0080-\uffff]/;
const DOLLAR_TAG = /^\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/;

/** Index just past the quote that closes the string opened at `start`, or the script's length. */
function endOfQuoted(script: string, start: number, backslashEscapes: boolean): number {
  const quote = script[start];
  const n = script.length;
  let j = start + 1;
  while (j < n) {
    const c = script[j];
    if (backslashEscapes && c === '\\') {
      j += 2;
      continue;
    }
    if (c === quote) {
      if (script[j + 1] === quote) {
        j += 2;
        continue;
      }
      return j + 1;
    }
    j++;
  }
  return n;
}

/** Index just past the end of the (possibly nested) block comment opened at `start`. */
function endOfBlockComment(script: string, start: number): number {
  const n = script.length;
  let depth = 0;
  let j = start;
  while (j < n) {
    if (script[j] === '/' && script[j + 1] === '*') {
      depth++;
      j += 2;
    } else if (script[j] === '*' && script[j + 1] === '/') {
      depth--;
      j += 2;
      if (depth === 0) return j;
    } else {
      j++;
    }
  }
  return n;
}

export function splitSqlStatements(script: string): string[] {
  const statements: string[] = [];
  let current = '';
  let i = 0;
  const n = script.length;
  // Whether the previous character continues an identifier or keyword (so `$` or `'` is not a token start).
  const inWord = (at: number): boolean => at > 0 && IDENT_CHAR.test(script[at - 1]);
  while (i < n) {
    const ch = script[i];
    const next = script[i + 1];
    if (ch === '-' && next === '-') {
      const end = script.indexOf('\n', i);
      i = end === -1 ? n : end + 1;
      current += '\n';
      continue;
    }
    if (ch === '/' && next === '*') {
      i = endOfBlockComment(script, i);
      current += ' ';
      continue;
    }
    if (ch === "'" || ch === '"') {
      // E'...' (escape string): the E is a token of its own, not the end of a longer word.
      const escapeString = ch === "'" && i > 0 && (script[i - 1] === 'E' || script[i - 1] === 'e') && !inWord(i - 1);
      const stop = endOfQuoted(script, i, escapeString);
      current += script.slice(i, stop);
      i = stop;
      continue;
    }
    if (ch === '$' && !inWord(i)) {
      const m = DOLLAR_TAG.exec(script.slice(i, i + 128));
      if (m) {
        const tag = m[0];
        const end = script.indexOf(tag, i + tag.length);
        const stop = end === -1 ? n : end + tag.length;
        current += script.slice(i, stop);
        i = stop;
        continue;
      }
    }
    if (ch === ';') {
      if (current.trim()) statements.push(current.trim());
      current = '';
      i++;
      continue;
    }
    current += ch;
    i++;
  }
  if (current.trim()) statements.push(current.trim());
  return statements;
}
