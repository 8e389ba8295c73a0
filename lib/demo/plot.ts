// A self-contained SVG line chart (no scripts, no external fonts, no dependencies) for the
// demo's reward curves: axes with "nice" ticks, one path per series, a legend.

export interface PlotSeries {
  name: string;
  /** Any SVG colour, e.g. '#1f77b4'. */
  color: string;
  /** [x, y]; points with a non-finite coordinate are skipped and break the line there. */
  points: [number, number][];
}

export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: PlotSeries[];
}

const kWidth = 760;
const kHeight = 420;
const kMargin = { left: 70, top: 40, bottom: 55 };
/** The legend's width per character of the longest name (12px sans-serif), and around it. */
const kCharWidth = 7;
const kLegendPad = 60;
const kTicks = 6;

interface Range {
  min: number;
  max: number;
}

/** Text for XML content and attribute values. */
function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c] as string);
}

function finite(p: [number, number]): boolean {
  return Number.isFinite(p[0]) && Number.isFinite(p[1]);
}

/** The extent of one coordinate over all finite points, widened when empty or a single value so the axis has length. */
function extent(series: PlotSeries[], axis: 0 | 1): Range {
  let min = Infinity, max = -Infinity;
  for (const s of series)
    for (const p of s.points) {
      if (!finite(p)) continue;
      min = Math.min(min, p[axis]);
      max = Math.max(max, p[axis]);
    }
  if (min > max) return { min: 0, max: 1 };
  if (min === max) {
    const pad = Math.abs(min) > 0 ? Math.abs(min) * 0.1 : 1;
    return { min: min - pad, max: max + pad };
  }
  return { min, max };
}

/** A 1, 2 or 5 times a power of ten step giving about `count` ticks over the range, and the range widened to whole steps. */
function niceTicks(r: Range, count: number): { range: Range; ticks: number[]; decimals: number } {
  const raw = (r.max - r.min) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) as number;
  const range = { min: Math.floor(r.min / step) * step, max: Math.ceil(r.max / step) * step };
  const ticks: number[] = [];
  for (let i = 0; range.min + i * step <= range.max + step * 1e-9; ++i) ticks.push(range.min + i * step);
  return { range, ticks, decimals: Math.max(0, -Math.floor(Math.log10(step))) };
}

function scale(r: Range, from: number, to: number): (v: number) => number {
  return (v) => from + ((v - r.min) / (r.max - r.min)) * (to - from);
}

const fmt = (v: number) => v.toFixed(2).replace(/\.?0+$/, '');

/** The series as one path: a segment per run of finite points, and a dot for a point that stands alone. */
function seriesMarkup(s: PlotSeries, x: (v: number) => number, y: (v: number) => number): string {
  const runs: [number, number][][] = [[]];
  for (const p of s.points) {
    if (finite(p)) runs[runs.length - 1].push(p);
    else if (runs[runs.length - 1].length > 0) runs.push([]);
  }
  const d = runs.filter((r) => r.length > 1)
    .map((r) => r.map((p, i) => `${i === 0 ? 'M' : 'L'}${fmt(x(p[0]))},${fmt(y(p[1]))}`).join(' ')).join(' ');
  const dots = runs.filter((r) => r.length === 1)
    .map(([p]) => `<circle cx="${fmt(x(p[0]))}" cy="${fmt(y(p[1]))}" r="3" fill="${escapeXml(s.color)}"/>`);
  return [`<path class="series" d="${d}" fill="none" stroke="${escapeXml(s.color)}" stroke-width="2" stroke-linejoin="round"/>`,
    ...dots].join('\n');
}

function axesMarkup(o: PlotOptions, right: number, xt: ReturnType<typeof niceTicks>, yt: ReturnType<typeof niceTicks>,
  x: (v: number) => number, y: (v: number) => number): string {
  const left = kMargin.left, top = kMargin.top, bottom = kHeight - kMargin.bottom;
  const out = [`<rect x="${left}" y="${top}" width="${right - left}" height="${bottom - top}" fill="none" stroke="#444"/>`];
  for (const v of xt.ticks)
    out.push(`<line x1="${fmt(x(v))}" y1="${bottom}" x2="${fmt(x(v))}" y2="${bottom + 5}" stroke="#444"/>`,
      `<text x="${fmt(x(v))}" y="${bottom + 18}" text-anchor="middle">${v.toFixed(xt.decimals)}</text>`);
  for (const v of yt.ticks)
    out.push(`<line x1="${left}" y1="${fmt(y(v))}" x2="${right}" y2="${fmt(y(v))}" stroke="#ddd"/>`,
      `<text x="${left - 8}" y="${fmt(y(v) + 4)}" text-anchor="end">${v.toFixed(yt.decimals)}</text>`);
  out.push(`<text x="${(left + right) / 2}" y="${kHeight - 12}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`,
    `<text transform="translate(18 ${(top + bottom) / 2}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel)}</text>`,
    `<text x="${(left + right) / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(o.title)}</text>`);
  return out.join('\n');
}

function legendMarkup(series: PlotSeries[], right: number): string {
  const x = right + 15;
  return series.map((s, i) => {
    const y = kMargin.top + 10 + i * 22;
    return `<line x1="${x}" y1="${y}" x2="${x + 22}" y2="${y}" stroke="${escapeXml(s.color)}" stroke-width="3"/>` +
      `<text x="${x + 28}" y="${y + 4}">${escapeXml(s.name)}</text>`;
  }).join('\n');
}

/** A line chart of the series as a standalone SVG document. */
export function svgPlot(o: PlotOptions): string {
  const xt = niceTicks(extent(o.series, 0), kTicks);
  const yt = niceTicks(extent(o.series, 1), kTicks);
  // The plot area gives way to the legend, so long series names are not cut off.
  const right = kWidth - kLegendPad - kCharWidth * Math.max(0, ...o.series.map((s) => s.name.length));
  const x = scale(xt.range, kMargin.left, right);
  const y = scale(yt.range, kHeight - kMargin.bottom, kMargin.top);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${kWidth}" height="${kHeight}" viewBox="0 0 ${kWidth} ${kHeight}" ` +
      'font-family="sans-serif" font-size="12">',
    `<title>${escapeXml(o.title)}</title>`,
    `<rect width="${kWidth}" height="${kHeight}" fill="white"/>`,
    axesMarkup(o, right, xt, yt, x, y),
    ...o.series.map((s) => seriesMarkup(s, x, y)),
    legendMarkup(o.series, right),
    '</svg>',
    '',
  ].join('\n');
}
