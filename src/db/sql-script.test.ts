import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadMigrations, MIGRATIONS_DIR } from './migrator.ts';
import { splitSqlStatements } from './sql-script.ts';

describe('splitSqlStatements', () => {
  it('splits on semicolons and trims each statement', () => {
    expect(splitSqlStatements('SELECT 1;\n  SELECT 2 ;\nSELECT 3;')).toEqual(['SELECT 1', 'SELECT 2', 'SELECT 3']);
  });

  it('keeps a trailing statement that has no semicolon', () => {
    expect(splitSqlStatements('SELECT 1; SELECT 2')).toEqual(['SELECT 1', 'SELECT 2']);
    expect(splitSqlStatements('SELECT 1')).toEqual(['SELECT 1']);
  });

  it('returns nothing for an empty, blank or semicolon-only script', () => {
    expect(splitSqlStatements('')).toEqual([]);
    expect(splitSqlStatements('  \n\t ')).toEqual([]);
    expect(splitSqlStatements(';;\n;')).toEqual([]);
  });

  it('skips empty statements between semicolons', () => {
    expect(splitSqlStatements('SELECT 1;;  ;SELECT 2;')).toEqual(['SELECT 1', 'SELECT 2']);
  });

  describe('comments', () => {
    it('drops line comments, including semicolons inside them', () => {
      expect(splitSqlStatements('-- header; not a statement\nSELECT 1; -- trailing; comment\nSELECT 2;')).toEqual(['SELECT 1', 'SELECT 2']);
    });

    it('returns nothing for a script of comments only', () => {
      expect(splitSqlStatements('-- one\n/* two; */\n-- three')).toEqual([]);
    });

    it('drops a line comment on the last line without a newline', () => {
      expect(splitSqlStatements('SELECT 1 -- the end')).toEqual(['SELECT 1']);
    });

    it('drops block comments, including semicolons inside them', () => {
      expect(splitSqlStatements('SELECT /* a; b */ 1; /* ; */ SELECT 2;')).toEqual(['SELECT   1', 'SELECT 2']);
    });

    it('keeps tokens on both sides of a block comment apart', () => {
      const [statement] = splitSqlStatements('SELECT/*x*/1');
      expect(statement).toBe('SELECT 1');
    });

    it('treats nested block comments as PostgreSQL does', () => {
      expect(splitSqlStatements('/* outer /* inner; */ still comment; */ SELECT 1; SELECT 2;')).toEqual(['SELECT 1', 'SELECT 2']);
    });

    it('does not treat a single dash or slash as a comment', () => {
      expect(splitSqlStatements('SELECT 3 - 1; SELECT 4 / 2;')).toEqual(['SELECT 3 - 1', 'SELECT 4 / 2']);
    });
  });

  describe('quotes', () => {
    it('does not split inside single-quoted strings', () => {
      expect(splitSqlStatements("INSERT INTO t VALUES ('a;b'); SELECT 2;")).toEqual(["INSERT INTO t VALUES ('a;b')", 'SELECT 2']);
    });

    it('handles doubled single quotes inside strings', () => {
      expect(splitSqlStatements("SELECT 'it''s; fine'; SELECT 2")).toEqual(["SELECT 'it''s; fine'", 'SELECT 2']);
    });

    it('keeps comment markers inside strings', () => {
      expect(splitSqlStatements("SELECT '-- not a comment; /* nor this */'; SELECT 2")).toEqual(["SELECT '-- not a comment; /* nor this */'", 'SELECT 2']);
    });

    it('does not split inside double-quoted identifiers, including doubled double quotes', () => {
      expect(splitSqlStatements('CREATE TABLE "odd;""name" (x int); SELECT 1')).toEqual(['CREATE TABLE "odd;""name" (x int)', 'SELECT 1']);
    });

    it('honours backslash escapes in E\'...\' strings', () => {
      expect(splitSqlStatements("SELECT E'it\\'s; fine'; SELECT 2")).toEqual(["SELECT E'it\\'s; fine'", 'SELECT 2']);
    });

    it('does not treat a backslash in a standard string as an escape', () => {
      expect(splitSqlStatements("SELECT 'C:\\'; SELECT 2")).toEqual(["SELECT 'C:\\'", 'SELECT 2']);
    });

    it('keeps the rest of the script in an unterminated string as one statement', () => {
      expect(splitSqlStatements("SELECT 1; SELECT 'open; SELECT 2")).toEqual(['SELECT 1', "SELECT 'open; SELECT 2"]);
    });
  });

  describe('dollar quotes', () => {
    it('does not split inside an anonymous $$ body', () => {
      const fn = `CREATE FUNCTION f() RETURNS int AS $$ BEGIN PERFORM 1; RETURN 2; END $$ LANGUAGE plpgsql`;
      expect(splitSqlStatements(`${fn}; SELECT f();`)).toEqual([fn, 'SELECT f()']);
    });

    it('does not split inside a tagged $body$ and ignores other tags inside it', () => {
      const fn = `CREATE FUNCTION g() RETURNS text AS $body$ SELECT $$x;$$ || 'y;' $body$ LANGUAGE sql`;
      expect(splitSqlStatements(`${fn};SELECT 1`)).toEqual([fn, 'SELECT 1']);
    });

    it('keeps comment markers and quotes inside a dollar-quoted body', () => {
      const stmt = "DO $$ BEGIN -- a; comment\n RAISE NOTICE 'x;'; /* ; */ END $$";
      expect(splitSqlStatements(`${stmt}; SELECT 1`)).toEqual([stmt, 'SELECT 1']);
    });

    it('accepts tags with digits after the first character', () => {
      const stmt = 'DO $fn1$ BEGIN PERFORM 1; END $fn1$';
      expect(splitSqlStatements(`${stmt}; SELECT 2`)).toEqual([stmt, 'SELECT 2']);
    });

    it('does not take positional parameters like $1 for dollar quotes', () => {
      expect(splitSqlStatements('PREPARE p AS SELECT $1; SELECT $2; EXECUTE p(1)')).toEqual(['PREPARE p AS SELECT $1', 'SELECT $2', 'EXECUTE p(1)']);
    });

    it('does not start a dollar quote inside an identifier that contains $', () => {
      expect(splitSqlStatements('SELECT a$b$ FROM t; SELECT 2')).toEqual(['SELECT a$b$ FROM t', 'SELECT 2']);
    });

    it('keeps the rest of the script in an unterminated dollar quote as one statement', () => {
      expect(splitSqlStatements('SELECT 1; DO $$ BEGIN; SELECT 2')).toEqual(['SELECT 1', 'DO $$ BEGIN; SELECT 2']);
    });
  });

  it('splits the shipped migrations into statements that each start with a SQL keyword', async () => {
    const migrations = await loadMigrations();
    expect(migrations.length).toBeGreaterThan(0);
    for (const m of migrations) {
      const text = await readFile(path.join(MIGRATIONS_DIR, m.name), 'utf8');
      const statements = splitSqlStatements(text);
      expect(statements.length).toBeGreaterThan(0);
      for (const s of statements) expect(s).toMatch(/^(CREATE|ALTER|INSERT|DROP|UPDATE|DELETE|COMMENT|DO)\b/i);
    }
  });
});
