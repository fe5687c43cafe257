import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assertSafeName, HookTemplates, renderShellVars, renderXml, shellQuote, TemplateError } from './render.ts';

const NASTY = [`a'b`, `$(touch /tmp/x)`, '`id`', 'a"b\\c', 'x; rm -rf /', "'; echo pwned; '", 'line\nbreak', '${HOME}', '*', ''];
const TEMPLATES = path.resolve(import.meta.dirname, '../../templates');

describe('shellQuote', () => {
  it('makes every value a single word that a real sh reads back unchanged', () => {
    for (const v of NASTY) {
      const script = `${renderShellVars({ THICKET_X: v })}printf '%s' "$THICKET_X"`;
      expect(execFileSync('/bin/sh', ['-c', script], { encoding: 'utf8' })).toBe(v);
    }
  });

  it('refuses NUL, which no shell word can hold', () => {
    expect(() => shellQuote('a\0b')).toThrow(TemplateError);
  });

  it('refuses variable names outside THICKET_*', () => {
    expect(() => renderShellVars({ PATH: '/tmp' })).toThrow(/bad hook variable name/);
    expect(() => renderShellVars({ 'THICKET_X;id': 'v' })).toThrow(/bad hook variable name/);
  });
});

describe('renderXml', () => {
  it('escapes markup in values', () => {
    const out = renderXml('<name>{{domain}}</name><x a="{{v}}"/>', { domain: '</name><evil/>', v: `"'&` });
    expect(out).toBe('<name>&lt;/name&gt;&lt;evil/&gt;</name><x a="&quot;&apos;&amp;"/>');
  });

  it('fails on a placeholder without a value', () => {
    expect(() => renderXml('<a>{{missing}}</a>', {})).toThrow(/missing/);
  });
});

describe('assertSafeName', () => {
  it('accepts pattern names and refuses shell and path metacharacters', () => {
    expect(() => assertSafeName('desktop name', 'win11-001.a_b')).not.toThrow();
    for (const bad of ['a;b', '$(id)', '../x', 'a b', '-rf', '`x`', 'a/b', '']) expect(() => assertSafeName('desktop name', bad)).toThrow(TemplateError);
  });
});

describe('HookTemplates', () => {
  const t = new HookTemplates(TEMPLATES);
  const vars = { THICKET_DESKTOP: "vdi-1'; touch /tmp/pwned; '", THICKET_NS_UUID: 'u' };

  it('builds a script that sh parses, with the values only in quoted assignments', () => {
    for (const type of ['linux-nvme', 'libvirt'] as const) {
      for (const action of ['attach', 'detach', 'restart', 'probe'] as const) {
        const script = t.script(type, action, vars);
        execFileSync('/bin/sh', ['-n', '-c', script]);
        expect(script).toContain(`THICKET_DESKTOP='vdi-1'\\''; touch /tmp/pwned; '\\'''`);
        expect(script.split('\n').filter((l) => l.includes('touch /tmp/pwned'))).toHaveLength(1);
      }
    }
  });

  it('renders a domain XML whose disk is the desktop link', () => {
    const xml = t.domainXml({ domain: 'p--d1', uuid: '6f1c2a40-0000-4000-8000-000000000001', poolId: 'pid', desktop: 'd1', vcpus: 2, memoryMiB: 2048, disk: '/dev/thicket/d1', network: 'default' });
    expect(xml).toContain("<source dev='/dev/thicket/d1'/>");
    expect(xml).toContain('<name>p--d1</name>');
    expect(xml).not.toMatch(/\{\{/);
  });
});
