// Runs the `thicket` CLI in this process against a test Thicket, capturing what it prints.
import { expect } from 'vitest';
import { run } from '../../src/cli/main.ts';
import type { TestThicket } from './thicket.ts';

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

/** `cli(...argv)` runs a command with the instance's URL and token; `json(...argv)` adds --json, expects exit 0 and parses. */
export function cliRunner(t: () => TestThicket): { cli(...argv: string[]): Promise<CliResult>; json(...argv: string[]): Promise<any> } {
  const cli = async (...argv: string[]): Promise<CliResult> => {
    let out = '';
    let err = '';
    const code = await run([...argv, '--url', t().url, '--token', t().token], (s) => (out += `${s}\n`), (s) => (err += `${s}\n`));
    return { code, out, err };
  };
  const json = async (...argv: string[]) => {
    const r = await cli(...argv, '--json');
    expect(r.code, r.err).toBe(0);
    return JSON.parse(r.out);
  };
  return { cli, json };
}
