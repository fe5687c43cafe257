// Renders hook scripts and the libvirt domain XML from templates/ with strict escaping: every value
// reaches a shell script only as a single-quoted word in a variable assignment, and reaches XML only
// entity-escaped. Names are also held to a safe character set, so a desktop or pool name can never
// become a command, a path outside the link directory, or markup.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { HookType } from '../db/schema.ts';

export const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const VAR_NAME = /^THICKET_[A-Z0-9_]+$/;
const PLACEHOLDER = /\{\{\s*([a-zA-Z][a-zA-Z0-9]*)\s*\}\}/g;

export class TemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TemplateError';
  }
}

export function assertSafeName(what: string, value: string): void {
  if (!SAFE_NAME.test(value) || value.length > 64) throw new TemplateError(`${what} "${value}" is not a safe name (letters, digits, ".", "_", "-")`);
}

/** A POSIX shell word that stands for exactly `value`. */
export function shellQuote(value: string): string {
  if (value.includes('\0')) throw new TemplateError('a shell value cannot contain NUL');
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

export function xmlEscape(value: string): string {
  if (/[\0-\x08\x0b\x0c\x0e-\x1f]/.test(value)) throw new TemplateError('an XML value cannot contain control characters');
  return value.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;').replaceAll("'", '&apos;');
}

/** `THICKET_X='value'` lines, one per variable, in a stable order. */
export function renderShellVars(vars: Record<string, string | number>): string {
  const lines: string[] = [];
  for (const name of Object.keys(vars).sort()) {
    if (!VAR_NAME.test(name)) throw new TemplateError(`bad hook variable name ${name}`);
    lines.push(`${name}=${shellQuote(String(vars[name]))}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Fills {{name}} placeholders with XML-escaped values; a placeholder without a value is an error. */
export function renderXml(template: string, vars: Record<string, string | number>): string {
  return template.replace(PLACEHOLDER, (_, name: string) => {
    if (!(name in vars)) throw new TemplateError(`the template uses {{${name}}}, which has no value`);
    return xmlEscape(String(vars[name]));
  });
}

export type HookAction = 'attach' | 'detach' | 'restart' | 'stop' | 'start' | 'probe';

// Which template files make up each action, in order. libvirt builds on linux-nvme: the namespace is
// attached first and the domain defined on top of it; detach undoes it in the reverse order.
const STEPS: Record<HookType, Partial<Record<HookAction, string[]>>> = {
  'linux-nvme': {
    probe: ['hooks/probe.sh'],
    attach: ['hooks/linux-nvme/attach.sh'],
    detach: ['hooks/linux-nvme/detach.sh'],
    restart: ['hooks/linux-nvme/attach.sh'],
    stop: [],
    start: [],
  },
  libvirt: {
    probe: ['hooks/probe.sh'],
    attach: ['hooks/linux-nvme/attach.sh', 'hooks/libvirt/attach.sh'],
    detach: ['hooks/libvirt/detach.sh', 'hooks/linux-nvme/detach.sh'],
    restart: ['hooks/linux-nvme/attach.sh', 'hooks/libvirt/restart.sh'],
    stop: ['hooks/libvirt/stop.sh'],
    start: ['hooks/linux-nvme/attach.sh', 'hooks/libvirt/start.sh'],
  },
};

export class HookTemplates {
  readonly dir: string;
  #cache = new Map<string, string>();
  constructor(dir: string) {
    this.dir = dir;
  }

  read(relative: string): string {
    let text = this.#cache.get(relative);
    if (text === undefined) {
      text = readFileSync(path.join(this.dir, relative), 'utf8');
      this.#cache.set(relative, text);
    }
    return text;
  }

  hasAction(type: HookType, action: HookAction): boolean {
    return (STEPS[type][action]?.length ?? 0) > 0;
  }

  /** The whole script for one run: strict mode, the variables, the shared helpers, then each step. */
  script(type: HookType, action: HookAction, vars: Record<string, string | number>): string {
    const steps = STEPS[type][action];
    if (!steps || steps.length === 0) throw new TemplateError(`hook type ${type} has no ${action} action`);
    // SSH servers hand exec sessions a short PATH (dropbear: /usr/bin:/bin); nvme-cli and modprobe live in sbin.
    const parts = ['#!/bin/sh', 'set -eu', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH', 'export PATH', '# --- variables (rendered by Thicket)', renderShellVars({ ...vars, THICKET_HOOK_TYPE: type, THICKET_ACTION: action }).trimEnd()];
    parts.push('# --- hooks/common.sh', this.read('hooks/common.sh').trimEnd());
    for (const s of steps) parts.push(`# --- ${s}`, this.read(s).trimEnd());
    return `${parts.join('\n')}\n`;
  }

  /** The libvirt domain XML for a desktop. */
  domainXml(vars: { domain: string; poolId: string; desktop: string; vcpus: number; memoryMiB: number; disk: string; network: string; uuid: string }): string {
    return renderXml(this.read('libvirt/desktop.xml'), vars);
  }
}
