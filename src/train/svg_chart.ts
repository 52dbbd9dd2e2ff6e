/**
 * Standalone SVG charts with no dependencies: loss curves of a run and the
 * size/perplexity scatter of the bit-width search. Axes use "nice" ticks
 * (1-2-5 steps, decades on a log axis); non-finite points are skipped.
 *
 * @module
 */
import type { EvalMetrics, StepMetrics } from "./report.ts";

/** How a series is drawn. */
export type SeriesStyle = "line" | "markers" | "step";

/** One named series of `[x, y]` points. */
export interface ChartSeries {
  /** Legend text. */
  readonly name: string;
  /**
   * Points in drawing order. Points with a NaN, infinite or beyond ±1e300
   * coordinate are skipped (a line breaks there), as are y outside
   * 1e-250..1e250 on a log axis.
   */
  readonly points: ReadonlyArray<readonly [number, number]>;
  /** Any SVG color (default: from a 10-color palette, by series index). */
  readonly color?: string;
  /**
   * `line` (default) joins points; `markers` draws circles; `step` sorts by x
   * and holds each y until the next x, with markers on the points.
   */
  readonly style?: SeriesStyle;
  /** Line width in pixels (default 1.5). */
  readonly strokeWidth?: number;
  /** Per-point tooltips (`<title>`) of the markers, parallel to `points`. */
  readonly labels?: ReadonlyArray<string | undefined>;
}

/** Options of {@link lineChartSvg}. */
export interface LineChartOptions {
  /** Title above the plot. */
  readonly title: string;
  /** Label under the x axis. */
  readonly xLabel: string;
  /** Label beside the y axis. */
  readonly yLabel: string;
  /** The data. */
  readonly series: readonly ChartSeries[];
  /** Logarithmic y axis (points with y outside 1e-250..1e250, zero and negatives included, are skipped). */
  readonly logY?: boolean;
  /** Width in pixels (default 720). */
  readonly width?: number;
  /** Height in pixels (default 420). */
  readonly height?: number;
}

const PALETTE = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
] as const;

const FONT = "font-family:sans-serif";
/** Approximate advance of one character at the 12 px font, for layout. */
const CHAR_W = 7;
const LEGEND_MAX_CHARS = 28;

/** Characters XML 1.0 forbids even when escaped (controls, lone surrogates) are removed. */
function xmlText(s: string): string {
  return s
    .replace(/[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu, "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}

function ellipsize(s: string, maxChars: number): string {
  const chars = [...s];
  return chars.length <= maxChars
    ? s
    : `${chars.slice(0, Math.max(1, maxChars - 1)).join("")}…`;
}

const TINY = 1e-200;
/** Coordinates beyond this magnitude are not drawn; keeps every tick finite. */
const HUGE = 1e300;
/** The range a log axis shows; with ticks every d decades its ends stay within 1e±300. */
const LOG_MIN = 1e-250;
const LOG_MAX = 1e250;

/** Ticks of a linear axis and the axis range they span. */
export interface Ticks {
  /** Tick values, ascending; the first is the axis minimum and the last the maximum. */
  readonly values: readonly number[];
  /** The tick spacing, `m · 10^e` with m ∈ {1, 2, 5} (linear axes); 0 on a log axis. */
  readonly step: number;
}

/** `k · m · 10^e` parsed from its decimal, so ticks are the nearest double (0.3, not 0.30000000000000004). */
function scaled(k: number, m: number, e: number): number {
  return Number(`${k * m}e${e}`);
}

/**
 * Linear ticks covering `[min, max]`: spacing `step = m · 10^e` with
 * m ∈ {1, 2, 5}, the smallest such that at most about `target` intervals
 * cover the range; ticks run from `floor(min / step) · step` to
 * `ceil(max / step) · step`. A range with no width (narrower than 1e-9 of
 * its magnitude, or than 1e-200) is widened by 10% of its magnitude, or by ±1
 * when that is below 1e-200. Ticks beyond the largest double throw.
 */
export function niceTicks(min: number, max: number, target = 5): Ticks {
  if (!Number.isFinite(min) || !Number.isFinite(max) || min > max) {
    throw new RangeError(
      `niceTicks: min and max must be finite with min <= max, got ${min}, ${max}`,
    );
  }
  // Any step spans a range straddling a multiple of itself in 2 intervals, so 1 cannot always be met.
  if (!Number.isInteger(target) || target < 2) {
    throw new RangeError(
      `niceTicks: target must be an integer >= 2, got ${target}`,
    );
  }
  const magnitude = Math.max(Math.abs(min), Math.abs(max));
  // Below 1e-200 the step's power of ten would underflow.
  if (max - min <= Math.max(1e-9 * magnitude, TINY)) {
    const pad = magnitude * 0.1 >= TINY ? magnitude * 0.1 : 1;
    min -= pad;
    max += pad;
  }
  const span = max - min;
  if (!Number.isFinite(span)) {
    throw new RangeError(
      `niceTicks: the range ${min}..${max} is wider than the largest double`,
    );
  }
  // The multiples k0..k1 of m·10^e that cover [min, max]; division can round
  // (or underflow to -0) across a multiple, so the ends are checked exactly.
  const cover = (m: number, e: number): [number, number] => {
    const st = scaled(1, m, e);
    let k0 = Math.floor(min / st);
    let k1 = Math.ceil(max / st);
    while (scaled(k0, m, e) > min) k0--;
    while (scaled(k1, m, e) < max) k1++;
    return [k0, k1];
  };
  // Smallest 1-2-5 step giving at most `target` intervals; ends once
  // step >= span, which needs at most 2.
  let e = Math.floor(Math.log10(span / target));
  let m = 0;
  let k0 = 0;
  let k1 = 0;
  while (m === 0) {
    for (const c of [1, 2, 5]) {
      [k0, k1] = cover(c, e);
      if (k1 - k0 <= target) {
        m = c;
        break;
      }
    }
    if (m === 0) e++;
  }
  const step = scaled(1, m, e);
  const values: number[] = [];
  for (let k = k0; k <= k1; k++) values.push(scaled(k, m, e));
  if (!values.every(Number.isFinite)) {
    throw new RangeError(
      `niceTicks: ticks for ${min}..${max} exceed the largest double`,
    );
  }
  return { values, step };
}

/**
 * Log-axis ticks covering `[min, max]` (1e-250 <= min <= max <= 1e250): the axis spans whole
 * decades `10^floor(log10 min)` to `10^ceil(log10 max)`; ticks are every
 * decade (every d-th when there are more than 10). When that is at most two
 * decades, 2·10^k and 5·10^k are ticks too and the axis ends at the last tick
 * <= min and the first tick >= max (at least two ticks), e.g. 2..20 for 2.5..11.
 */
export function logTicks(min: number, max: number): Ticks {
  if (!(min >= LOG_MIN) || !(max <= LOG_MAX) || min > max) {
    throw new RangeError(
      `logTicks: min and max must satisfy 1e-250 <= min <= max <= 1e250, got ${min}, ${max}`,
    );
  }
  let lo = Math.floor(Math.log10(min));
  let hi = Math.ceil(Math.log10(max));
  // log10 can be one ulp off for exact powers; the axis must still cover the data.
  if (Number(`1e${lo}`) > min) lo--;
  if (Number(`1e${hi}`) < max) hi++;
  if (hi === lo) hi++;
  const every = Math.ceil((hi - lo) / 10);
  lo = Math.floor(lo / every) * every;
  hi = Math.ceil(hi / every) * every;
  const values: number[] = [];
  for (let k = lo; k <= hi; k += every) {
    values.push(Number(`1e${k}`));
    if (hi - lo <= 2 && k < hi) values.push(Number(`2e${k}`), Number(`5e${k}`));
  }
  if (hi - lo > 2) return { values, step: 0 };
  const first = values.findLastIndex((v) => v <= min);
  const last = values.findIndex((v) => v >= max);
  return {
    values: values.slice(first, Math.max(last, first + 1) + 1),
    step: 0,
  };
}

const SI_UNITS = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]] as const;

/** `floor(log10(x))`, robust to x being a rounded m·10^k (log10(1000) may be 2.9999…). */
const decade = (x: number): number => Math.floor(Math.log10(x) + 1e-9);

/**
 * Labels of one axis, with just the digits the tick spacing needs: SI
 * suffixes (`2.5M`) from 10^4 to 10^15, exponents (`1.2e-5`) outside
 * 10^-4..10^15, plain decimals otherwise; log-axis ticks d·10^k print as
 * `d` digits or `de<k>`.
 */
function axisLabels(t: Ticks): string[] {
  const maxAbs = Math.max(...t.values.map(Math.abs));
  const exp = (v: number, digits: number) =>
    v.toExponential(Math.max(0, Math.min(20, digits))).replace("e+", "e");
  if (t.step === 0) {
    return t.values.map((v) => v >= 1e-3 && v < 1e5 ? String(v) : exp(v, 0));
  }
  const unit = maxAbs >= 1e4 && maxAbs < 1e15
    ? SI_UNITS.find(([u]) => u <= maxAbs)
    : undefined;
  return t.values.map((v) => {
    if (v === 0) return "0";
    if (unit !== undefined) {
      const decimals = Math.max(0, -decade(t.step / unit[0]));
      return `${(v / unit[0]).toFixed(decimals)}${unit[1]}`;
    }
    if (maxAbs >= 1e15 || maxAbs < 1e-4) {
      return exp(v, decade(Math.abs(v)) - decade(t.step));
    }
    return v.toFixed(Math.min(20, Math.max(0, -decade(t.step))));
  });
}

const coord = (v: number): string => v.toFixed(2);

/**
 * A standalone SVG line chart: title, axes with nice ticks and grid lines,
 * axis labels, a legend right of the plot, one polyline per run of finite
 * points. Every drawn point lies inside the plot rectangle
 * (`<rect class="plot-area">`), which spans exactly the first to the last tick
 * of each axis; series `i` is drawn in the i-th `<g class="series">`. With no finite point the
 * axes span 0..1 and the plot says "no data".
 */
export function lineChartSvg(opts: LineChartOptions): string {
  const width = opts.width ?? 720;
  const height = opts.height ?? 420;
  for (const [name, v] of [["width", width], ["height", height]] as const) {
    if (!Number.isFinite(v) || v < 200) {
      throw new RangeError(`lineChartSvg: ${name} must be >= 200, got ${v}`);
    }
  }
  const logY = opts.logY ?? false;
  const usable = ([x, y]: readonly [number, number]) =>
    Math.abs(x) <= HUGE && Math.abs(y) <= HUGE &&
    (!logY || (y >= LOG_MIN && y <= LOG_MAX));

  let xMin = Infinity, xMax = -Infinity, yMin = Infinity, yMax = -Infinity;
  for (const s of opts.series) {
    for (const p of s.points) {
      if (!usable(p)) continue;
      xMin = Math.min(xMin, p[0]);
      xMax = Math.max(xMax, p[0]);
      yMin = Math.min(yMin, p[1]);
      yMax = Math.max(yMax, p[1]);
    }
  }
  const empty = xMin > xMax;
  const xt = empty ? niceTicks(0, 1) : niceTicks(xMin, xMax, 6);
  const yt = empty
    ? (logY ? logTicks(1, 10) : niceTicks(0, 1))
    : logY
    ? logTicks(yMin, yMax)
    : niceTicks(yMin, yMax, 6);
  const yLabels = axisLabels(yt);
  const xLabels = axisLabels(xt);

  const names = opts.series.map((s) => ellipsize(s.name, LEGEND_MAX_CHARS));
  const legendW = names.length === 0
    ? 0
    : 36 + CHAR_W * Math.max(...names.map((n) => [...n].length));
  const left = 34 + CHAR_W * Math.max(...yLabels.map((l) => l.length));
  // Room for the legend, and for half of the last x label centred on the edge.
  const right = Math.max(
    16 + legendW,
    8 + CHAR_W * xLabels[xLabels.length - 1].length / 2,
  );
  const top = 36;
  const bottom = 52;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  if (plotW < 60 || plotH < 60) {
    throw new RangeError(
      `lineChartSvg: width ${width} x height ${height} leaves no room for the plot next to the legend`,
    );
  }

  const fx = (x: number) => {
    const [a, b] = [xt.values[0], xt.values[xt.values.length - 1]];
    return left + (x - a) / (b - a) * plotW;
  };
  const ty = logY ? Math.log10 : (y: number) => y;
  const y0 = ty(yt.values[0]);
  const y1 = ty(yt.values[yt.values.length - 1]);
  // Clamping absorbs rounding where a point sits exactly on the axis range.
  const clampX = (v: number) => Math.min(left + plotW, Math.max(left, v));
  const clampY = (v: number) => Math.min(top + plotH, Math.max(top, v));
  const px = (x: number) => coord(clampX(fx(x)));
  const py = (y: number) =>
    coord(clampY(top + plotH - (ty(y) - y0) / (y1 - y0) * plotH));

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${
      coord(width / 2)
    }" y="22" text-anchor="middle" style="${FONT};font-size:15px;font-weight:bold">${
      xmlText(ellipsize(opts.title, Math.floor(width / 8.5)))
    }</text>`,
  );

  // Grid and ticks.
  out.push(`<g style="${FONT};font-size:12px" fill="#333333">`);
  xt.values.forEach((v, i) => {
    const x = px(v);
    out.push(
      `<line x1="${x}" y1="${coord(top)}" x2="${x}" y2="${
        coord(top + plotH)
      }" stroke="#e5e5e5"/>`,
      `<text x="${x}" y="${coord(top + plotH + 16)}" text-anchor="middle">${
        xLabels[i]
      }</text>`,
    );
  });
  yt.values.forEach((v, i) => {
    const y = py(v);
    out.push(
      `<line x1="${coord(left)}" y1="${y}" x2="${
        coord(left + plotW)
      }" y2="${y}" stroke="#e5e5e5"/>`,
      `<text x="${coord(left - 6)}" y="${
        coord(Number(y) + 4)
      }" text-anchor="end">${yLabels[i]}</text>`,
    );
  });
  out.push(
    `<rect class="plot-area" x="${coord(left)}" y="${coord(top)}" width="${
      coord(plotW)
    }" height="${coord(plotH)}" fill="none" stroke="#333333"/>`,
    `<text x="${coord(left + plotW / 2)}" y="${
      coord(height - 10)
    }" text-anchor="middle">${
      xmlText(ellipsize(opts.xLabel, Math.floor(plotW / CHAR_W)))
    }</text>`,
    `<text transform="translate(14 ${
      coord(top + plotH / 2)
    }) rotate(-90)" text-anchor="middle">${
      xmlText(ellipsize(opts.yLabel, Math.floor(plotH / CHAR_W)))
    }</text>`,
  );
  if (empty) {
    out.push(
      `<text x="${coord(left + plotW / 2)}" y="${
        coord(top + plotH / 2)
      }" text-anchor="middle" fill="#999999">no data</text>`,
    );
  }
  out.push(`</g>`);

  // Data.
  opts.series.forEach((s, i) => {
    const color = xmlText(s.color ?? PALETTE[i % PALETTE.length]);
    const sw = coord(s.strokeWidth ?? 1.5);
    const style = s.style ?? "line";
    // Indices travel with the points so a sorted step series keeps its labels.
    const indexed = s.points.map((p, j) => [p, j] as const);
    const pts = style === "step"
      ? indexed.filter(([p]) => usable(p)).sort((a, b) => a[0][0] - b[0][0])
      : indexed;
    const circle = (p: readonly [number, number], r: number, j: number) => {
      const at = `cx="${px(p[0])}" cy="${py(p[1])}" r="${r}" fill="${color}"`;
      const label = s.labels?.[j];
      return label === undefined
        ? `<circle ${at}/>`
        : `<circle ${at}><title>${xmlText(label)}</title></circle>`;
    };
    out.push(`<g class="series">`);
    if (style === "markers") {
      for (const [p, j] of pts) if (usable(p)) out.push(circle(p, 3.5, j));
    } else {
      const runs: Array<Array<readonly [number, number]>> = [[]];
      for (const [p] of pts) {
        if (usable(p)) runs[runs.length - 1].push(p);
        else if (runs[runs.length - 1].length > 0) runs.push([]);
      }
      for (const run of runs) {
        if (run.length === 1 && style === "line") {
          out.push(circle(run[0], 2, -1));
        }
        if (run.length < 2) continue;
        const coords: string[] = [];
        run.forEach((p, j) => {
          // A step line holds the previous y until this x, then jumps.
          if (style === "step" && j > 0) {
            coords.push(`${px(p[0])},${py(run[j - 1][1])}`);
          }
          coords.push(`${px(p[0])},${py(p[1])}`);
        });
        out.push(
          `<polyline points="${
            coords.join(" ")
          }" fill="none" stroke="${color}" stroke-width="${sw}" stroke-linejoin="round"/>`,
        );
      }
      if (style === "step") {
        for (const [p, j] of pts) out.push(circle(p, 3, j));
      }
    }
    out.push(`</g>`);
  });

  // Legend, right of the plot so it never hides data.
  if (names.length > 0) {
    const lx = left + plotW + 16;
    out.push(`<g style="${FONT};font-size:12px" fill="#333333">`);
    names.forEach((name, i) => {
      const s = opts.series[i];
      const color = xmlText(s.color ?? PALETTE[i % PALETTE.length]);
      const ly = top + 10 + i * 18;
      out.push(
        s.style === "markers"
          ? `<circle cx="${coord(lx + 10)}" cy="${
            coord(ly)
          }" r="3.5" fill="${color}"/>`
          : `<line x1="${coord(lx)}" y1="${coord(ly)}" x2="${
            coord(lx + 20)
          }" y2="${coord(ly)}" stroke="${color}" stroke-width="2"/>`,
        `<text x="${coord(lx + 26)}" y="${coord(ly + 4)}">${
          xmlText(name)
        }</text>`,
      );
    });
    out.push(`</g>`);
  }
  out.push(`</svg>`, "");
  return out.join("\n");
}

/** Options of {@link lossCurveSvg}. */
export interface LossCurveOptions {
  /** The x axis: training tokens (default) or optimizer steps. */
  readonly x?: "tokens" | "steps";
  /**
   * EMA factor β of the smoothed training curve,
   * `s_t = β · s_{t−1} + (1 − β) · loss_t` with bias correction `s_t / (1 − β^t)`
   * (default 0.9; 0 draws no smoothed curve).
   */
  readonly smoothing?: number;
  /** Chart title (default "Loss"). */
  readonly title?: string;
  /** Logarithmic y axis (default false). */
  readonly logY?: boolean;
  /** Width in pixels. */
  readonly width?: number;
  /** Height in pixels. */
  readonly height?: number;
}

/**
 * Bias-corrected exponential moving average of `values`:
 * `s_t = β · s_{t−1} + (1 − β) · v_t`, `s_0 = 0`, reported as `s_t / (1 − β^t)`
 * so the start is not pulled towards 0. Non-finite values are skipped (their
 * output is NaN) and do not enter the average.
 */
export function ema(values: readonly number[], beta: number): number[] {
  if (!(beta >= 0 && beta < 1)) {
    throw new RangeError(`ema: beta must be in [0, 1), got ${beta}`);
  }
  let s = 0;
  let weight = 1; // β^t over the finite values seen so far
  return values.map((v) => {
    if (!Number.isFinite(v)) return NaN;
    s = beta * s + (1 - beta) * v;
    weight *= beta;
    return s / (1 - weight);
  });
}

/**
 * Loss curves of a run: the raw training loss (thin), its EMA (see
 * {@link ema}) drawn over it, and validation loss as markers, against
 * training tokens or steps.
 */
export function lossCurveSvg(
  metrics: {
    readonly train: readonly StepMetrics[];
    readonly eval: readonly EvalMetrics[];
  },
  opts: LossCurveOptions = {},
): string {
  const byTokens = (opts.x ?? "tokens") === "tokens";
  const beta = opts.smoothing ?? 0.9;
  const xOf = (m: { step: number; tokens: number }) =>
    byTokens ? m.tokens : m.step;
  const raw = metrics.train.map((m) => [xOf(m), m.loss] as const);
  const series: ChartSeries[] = [{
    name: beta > 0 ? "train loss (raw)" : "train loss",
    points: raw,
    color: beta > 0 ? "#9ecae1" : "#1f77b4",
    strokeWidth: 1,
  }];
  if (beta > 0) {
    const smooth = ema(metrics.train.map((m) => m.loss), beta);
    series.push({
      name: `train loss (EMA ${beta})`,
      points: raw.map(([x], i) => [x, smooth[i]] as const),
      color: "#1f77b4",
      strokeWidth: 2,
    });
  }
  series.push({
    name: "validation loss",
    points: metrics.eval.map((e) => [xOf(e), e.valLoss] as const),
    color: "#d62728",
    style: "markers",
  });
  return lineChartSvg({
    title: opts.title ?? "Loss",
    xLabel: byTokens ? "training tokens" : "step",
    yLabel: "loss (nats/token)",
    series,
    logY: opts.logY,
    width: opts.width,
    height: opts.height,
  });
}

/** One evaluated candidate of the bit-width search. */
export interface FrontierPoint {
  /** Storage size in bytes. */
  readonly bytes: number;
  /** Validation perplexity. */
  readonly ppl: number;
  /** Optional name, the marker's tooltip. */
  readonly label?: string;
}

/** Options of {@link scatterFrontierSvg}. */
export interface ScatterFrontierOptions {
  /** Every evaluated candidate. */
  readonly points: readonly FrontierPoint[];
  /** The Pareto frontier (e.g. from `paretoFrontier`), drawn as a step line. */
  readonly frontier: readonly FrontierPoint[];
  /** Chart title (default "Size vs perplexity"). */
  readonly title?: string;
  /** Logarithmic perplexity axis (default true). */
  readonly logY?: boolean;
  /** Width in pixels. */
  readonly width?: number;
  /** Height in pixels. */
  readonly height?: number;
}

const MIB = 1024 * 1024;

/**
 * Size (MiB = bytes / 2^20) against validation perplexity: candidates as
 * markers, the frontier as a step line (best perplexity reachable at each
 * size). Labels become `<title>` tooltips of the markers.
 */
export function scatterFrontierSvg(opts: ScatterFrontierOptions): string {
  return lineChartSvg({
    title: opts.title ?? "Size vs perplexity",
    xLabel: "size (MiB)",
    yLabel: "validation perplexity",
    logY: opts.logY ?? true,
    width: opts.width,
    height: opts.height,
    series: [
      {
        name: "candidates",
        points: opts.points.map((p) => [p.bytes / MIB, p.ppl] as const),
        labels: opts.points.map((p) => p.label),
        color: "#7f7f7f",
        style: "markers",
      },
      {
        name: "Pareto frontier",
        points: opts.frontier.map((p) => [p.bytes / MIB, p.ppl] as const),
        labels: opts.frontier.map((p) => p.label),
        color: "#d62728",
        style: "step",
        strokeWidth: 2,
      },
    ],
  });
}
