// Human output for the CLI: tables and a progress bar on stderr (stdout stays clean for --json).

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function table(rows: Array<Record<string, unknown>>, columns: string[]): string {
  if (rows.length === 0) return '(none)';
  const cells = rows.map((r) => columns.map((c) => String(r[c] ?? '')));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i].length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...cells.map(line)].join('\n');
}

export class ProgressBar {
  #label: string;
  #last = '';
  #enabled: boolean;
  constructor(label: string, enabled = process.stderr.isTTY === true || process.env.THICKET_PROGRESS === '1') {
    this.#label = label;
    this.#enabled = enabled;
  }
  update(done: number, total: number, detail = ''): void {
    if (!this.#enabled) return;
    const ratio = total > 0 ? Math.min(1, done / total) : 0;
    const width = 30;
    const filled = Math.round(ratio * width);
    const text = `${this.#label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(ratio * 100).toFixed(0).padStart(3)}% ${detail}`;
    if (text === this.#last) return;
    this.#last = text;
    process.stderr.write(`\r${text}`);
  }
  end(): void {
    if (this.#enabled && this.#last) process.stderr.write('\n');
  }
}
