/**
 * Line and bar charts as plain SVG text, for docs/benchmarks: no browser, no chart library.
 * Fixed layout (title, legend row, plot, axis labels) on a white background so a chart reads
 * the same on a light or a dark page; colours from the Okabe-Ito palette, which stays apart for
 * colour-blind readers. Values are drawn to scale from zero; a missing value draws nothing.
 */

const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#D55E00', '#CC79A7', '#56B4E9', '#999999', '#000000'];
const FONT = 'system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif';
/** Rough width of one character at 12 px, for laying out labels without measuring text. */
const CHAR_PX = 6.3;
const DEFAULT_WIDTH_PX = 680;
const DEFAULT_HEIGHT_PX = 360;

export interface LinePoint {
  x: number;
  y: number;
}

export interface LineSeries {
  name: string;
  points: LinePoint[];
  /** Drawn dashed and without markers: a reference such as an ideal. */
  dashed?: boolean;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
  /** `category`: the x values evenly spaced, in order (concurrency levels); `linear`: to scale. */
  xScale?: 'category' | 'linear';
  widthPx?: number;
  heightPx?: number;
}

export interface BarSeries {
  name: string;
  /** One value per category; null or undefined draws no bar. */
  values: (number | null | undefined)[];
}

export interface BarChartOptions {
  title: string;
  /** Label of the value axis. */
  valueLabel: string;
  categories: string[];
  series: BarSeries[];
  /** Categories down the side, bars to the right: for long category names. */
  horizontal?: boolean;
  widthPx?: number;
  heightPx?: number;
}

export function escapeXml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;');
}

/** 0.043, 1.25, 12.5, 830, 1.2k, 13k. */
export function formatValue(v: number): string {
  const a = Math.abs(v);
  const trim = (s: string): string => (s.includes('.') ? s.replace(/\.?0+$/, '') : s);
  if (a >= 10_000) return `${trim((v / 1000).toFixed(0))}k`;
  if (a >= 1000) return `${trim((v / 1000).toFixed(1))}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return trim(v.toFixed(1));
  if (a >= 1) return trim(v.toFixed(2));
  if (a === 0) return '0';
  return trim(v.toPrecision(2));
}

/** A step of 1, 2, 2.5 or 5 × 10^k giving about `count` ticks from 0 to `max`. */
function niceStep(max: number, count = 5): number {
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const n = raw / power;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * power;
}

function valueAxis(values: number[]): { max: number; ticks: number[] } {
  const top = Math.max(0, ...values.filter((v) => Number.isFinite(v)));
  const max0 = top > 0 ? top : 1;
  const step = niceStep(max0);
  const max = Math.ceil(max0 / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; i * step <= max + step / 1e6; i++) ticks.push(i * step);
  return { max, ticks };
}

const textWidth = (text: string): number => text.length * CHAR_PX;

function frame(widthPx: number, heightPx: number, title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${widthPx}" height="${heightPx}" viewBox="0 0 ${widthPx} ${heightPx}" font-family="${FONT}" font-size="12" role="img">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${widthPx}" height="${heightPx}" fill="#ffffff"/>`,
    `<text x="${widthPx / 2}" y="20" text-anchor="middle" font-size="14" font-weight="600" fill="#222">${escapeXml(title)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

/** Legend items in rows below the title; returns the elements and the height used. */
function legend(
  names: { name: string; dashed?: boolean }[],
  widthPx: number,
  top: number,
): { elements: string[]; heightPx: number } {
  const elements: string[] = [];
  let x = 16;
  let y = top;
  for (const [i, item] of names.entries()) {
    const w = 28 + textWidth(item.name) + 16;
    if (x + w > widthPx - 8 && x > 16) {
      x = 16;
      y += 18;
    }
    const color = PALETTE[i % PALETTE.length]!;
    elements.push(
      item.dashed
        ? `<line x1="${x}" y1="${y - 4}" x2="${x + 20}" y2="${y - 4}" stroke="${color}" stroke-width="2" stroke-dasharray="5 3"/>`
        : `<rect x="${x + 4}" y="${y - 10}" width="12" height="12" fill="${color}"/>`,
      `<text x="${x + 26}" y="${y}" fill="#333">${escapeXml(item.name)}</text>`,
    );
    x += w;
  }
  return { elements, heightPx: y - top + 18 };
}

function gridAndValueTicks(
  ticks: number[],
  toPx: (v: number) => number,
  horizontal: boolean,
  plot: { left: number; right: number; top: number; bottom: number },
): string[] {
  return ticks.flatMap((t) => {
    const p = toPx(t);
    return horizontal
      ? [
          `<line x1="${p}" y1="${plot.top}" x2="${p}" y2="${plot.bottom}" stroke="#e5e5e5"/>`,
          `<text x="${p}" y="${plot.bottom + 16}" text-anchor="middle" fill="#555">${formatValue(t)}</text>`,
        ]
      : [
          `<line x1="${plot.left}" y1="${p}" x2="${plot.right}" y2="${p}" stroke="#e5e5e5"/>`,
          `<text x="${plot.left - 6}" y="${p + 4}" text-anchor="end" fill="#555">${formatValue(t)}</text>`,
        ];
  });
}

const fixed = (v: number): string => v.toFixed(1);

export function lineChart(options: LineChartOptions): string {
  const widthPx = options.widthPx ?? DEFAULT_WIDTH_PX;
  const heightPx = options.heightPx ?? DEFAULT_HEIGHT_PX;
  const series = options.series.filter((s) => s.points.length > 0);
  const lg = legend(series, widthPx, 44);
  const plot = { left: 64, right: widthPx - 20, top: 44 + lg.heightPx, bottom: heightPx - 48 };
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const y = valueAxis(series.flatMap((s) => s.points.map((p) => p.y)));
  const yPx = (v: number): number => plot.bottom - (v / y.max) * (plot.bottom - plot.top);
  let xPx: (v: number) => number;
  let xTicks: number[];
  if ((options.xScale ?? 'category') === 'category') {
    const band = (plot.right - plot.left) / Math.max(1, xs.length);
    xPx = (v) => plot.left + band * (xs.indexOf(v) + 0.5);
    xTicks = xs;
  } else {
    // from the smallest x to the largest, with a margin so that no marker sits on an axis
    const lo = xs[0] ?? 0;
    const hi = xs.at(-1) ?? 1;
    const margin = (hi - lo || 1) * 0.04;
    xPx = (v) => plot.left + ((v - lo + margin) / (hi - lo + 2 * margin)) * (plot.right - plot.left);
    // every measured x when few, else nice ticks in range
    xTicks = xs.length <= 12 ? xs : valueAxis(xs).ticks.filter((t) => t >= lo && t <= hi);
  }
  const body = [
    ...lg.elements,
    ...gridAndValueTicks(y.ticks, yPx, false, plot),
    ...xTicks.map(
      (t) =>
        `<text x="${fixed(xPx(t))}" y="${plot.bottom + 16}" text-anchor="middle" fill="#555">${formatValue(t)}</text>`,
    ),
    `<line x1="${plot.left}" y1="${plot.bottom}" x2="${plot.right}" y2="${plot.bottom}" stroke="#888"/>`,
    `<line x1="${plot.left}" y1="${plot.top}" x2="${plot.left}" y2="${plot.bottom}" stroke="#888"/>`,
    `<text x="${(plot.left + plot.right) / 2}" y="${heightPx - 12}" text-anchor="middle" fill="#333">${escapeXml(options.xLabel)}</text>`,
    `<text transform="translate(16 ${(plot.top + plot.bottom) / 2}) rotate(-90)" text-anchor="middle" fill="#333">${escapeXml(options.yLabel)}</text>`,
  ];
  for (const [i, s] of series.entries()) {
    const color = PALETTE[i % PALETTE.length]!;
    const points = [...s.points].sort((a, b) => a.x - b.x);
    const path = points.map((p) => `${fixed(xPx(p.x))},${fixed(yPx(p.y))}`).join(' ');
    body.push(
      `<polyline points="${path}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    if (!s.dashed) {
      for (const p of points)
        body.push(
          `<circle cx="${fixed(xPx(p.x))}" cy="${fixed(yPx(p.y))}" r="3.5" fill="${color}"><title>${escapeXml(`${s.name}: ${formatValue(p.y)} at ${formatValue(p.x)}`)}</title></circle>`,
        );
    }
  }
  return frame(widthPx, heightPx, options.title, body);
}

export function barChart(options: BarChartOptions): string {
  const widthPx = options.widthPx ?? DEFAULT_WIDTH_PX;
  const horizontal = options.horizontal ?? false;
  const n = options.categories.length;
  const k = Math.max(1, options.series.length);
  const heightPx =
    options.heightPx ?? (horizontal ? Math.max(200, 110 + n * Math.max(22, 14 * k + 8)) : DEFAULT_HEIGHT_PX);
  const lg = options.series.length > 1 ? legend(options.series, widthPx, 44) : { elements: [], heightPx: 0 };
  const labelWidth = horizontal ? Math.min(220, 12 + Math.max(...options.categories.map(textWidth))) : 0;
  const plot = horizontal
    ? { left: 8 + labelWidth, right: widthPx - 56, top: 40 + lg.heightPx, bottom: heightPx - 44 }
    : { left: 64, right: widthPx - 16, top: 44 + lg.heightPx, bottom: heightPx - 48 };
  const values = options.series.flatMap((s) => s.values.filter((v): v is number => typeof v === 'number'));
  const axis = valueAxis(values);
  const span = horizontal ? plot.right - plot.left : plot.bottom - plot.top;
  const scale = (v: number): number => (Math.max(0, v) / axis.max) * span;
  const valuePx = (v: number): number => (horizontal ? plot.left + scale(v) : plot.bottom - scale(v));
  const band = ((horizontal ? plot.bottom - plot.top : plot.right - plot.left) as number) / Math.max(1, n);
  const barPx = Math.min(36, (band * 0.8) / k);
  const body = [...lg.elements, ...gridAndValueTicks(axis.ticks, valuePx, horizontal, plot)];
  for (const [c, category] of options.categories.entries()) {
    const center = (horizontal ? plot.top : plot.left) + band * (c + 0.5);
    body.push(
      horizontal
        ? `<text x="${plot.left - 8}" y="${fixed(center + 4)}" text-anchor="end" fill="#333">${escapeXml(category)}</text>`
        : `<text x="${fixed(center)}" y="${plot.bottom + 16}" text-anchor="middle" fill="#333">${escapeXml(category)}</text>`,
    );
    for (const [i, s] of options.series.entries()) {
      const v = s.values[c];
      if (typeof v !== 'number' || !Number.isFinite(v)) continue;
      const color = PALETTE[i % PALETTE.length]!;
      const offset = center - (barPx * k) / 2 + barPx * i;
      const label = escapeXml(`${s.name}, ${category}: ${formatValue(v)}`);
      body.push(
        horizontal
          ? `<rect x="${plot.left}" y="${fixed(offset + 1)}" width="${fixed(scale(v))}" height="${fixed(barPx - 2)}" fill="${color}"><title>${label}</title></rect>`
          : `<rect x="${fixed(offset + 1)}" y="${fixed(valuePx(v))}" width="${fixed(barPx - 2)}" height="${fixed(scale(v))}" fill="${color}"><title>${label}</title></rect>`,
        horizontal
          ? `<text x="${fixed(valuePx(v) + 4)}" y="${fixed(offset + barPx / 2 + 4)}" font-size="10" fill="#333">${formatValue(v)}</text>`
          : `<text x="${fixed(offset + barPx / 2)}" y="${fixed(valuePx(v) - 3)}" font-size="10" text-anchor="middle" fill="#333">${formatValue(v)}</text>`,
      );
    }
  }
  body.push(
    horizontal
      ? `<line x1="${plot.left}" y1="${plot.top}" x2="${plot.left}" y2="${plot.bottom}" stroke="#888"/>`
      : `<line x1="${plot.left}" y1="${plot.bottom}" x2="${plot.right}" y2="${plot.bottom}" stroke="#888"/>`,
    horizontal
      ? `<text x="${(plot.left + plot.right) / 2}" y="${heightPx - 10}" text-anchor="middle" fill="#333">${escapeXml(options.valueLabel)}</text>`
      : `<text transform="translate(16 ${(plot.top + plot.bottom) / 2}) rotate(-90)" text-anchor="middle" fill="#333">${escapeXml(options.valueLabel)}</text>`,
  );
  return frame(widthPx, heightPx, options.title, body);
}
