/** Pieces of docs/benchmarks.md every scenario's section uses: tables, numbers for cells, charts. */

/** The one rounding of bench/: results keep `digits` decimals (3 by default: µs of a ms). */
export function round(v: number, digits = 3): number {
  return Math.round(v * 10 ** digits) / 10 ** digits;
}

/** A number for a table cell: `-` when missing, thousands grouped from 1,000. */
export function cell(v: number | undefined | null, digits = 2): string {
  if (v === undefined || v === null || !Number.isFinite(v)) return '-';
  if (Math.abs(v) >= 1000 && Number.isInteger(Math.round(v))) return Math.round(v).toLocaleString('en-US');
  return String(round(v, digits));
}

export const pct = (v: number | undefined | null): string =>
  v === undefined || v === null ? '-' : `${Math.round(v * 100)}%`;

/** 4096 -> "4 KiB", 1048576 -> "1 MiB". */
export function bytesText(bytes: number): string {
  if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} B`;
}

/** A Markdown table, followed by a blank line. */
export function table(header: string[], rows: string[][]): string[] {
  const escapeCell = (c: string): string => c.replaceAll('|', '\\|');
  return [
    `| ${header.map(escapeCell).join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(escapeCell).join(' | ')} |`),
    '',
  ];
}

/** Charts written for the page; `add` returns the Markdown image that links one. */
export class Charts {
  readonly files = new Map<string, string>();

  add(name: string, svg: string, alt: string): string {
    this.files.set(`${name}.svg`, svg);
    return `![${alt}](benchmarks/${name}.svg)`;
  }
}

export const noChart = (what: string, why: string): string => `_No ${what} chart: ${why}._`;
