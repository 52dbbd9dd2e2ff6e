import { strict as assert } from "node:assert";
import fc from "fast-check";
import { DOMParser } from "@xmldom/xmldom";
import {
  type ChartSeries,
  ema,
  lineChartSvg,
  logTicks,
  lossCurveSvg,
  niceTicks,
  scatterFrontierSvg,
  type Ticks,
} from "../../src/train/svg_chart.ts";

// deno-lint-ignore no-explicit-any
type Node = any;

/** Parses with a real XML parser that throws on any error or warning. */
function parseSvg(svg: string): Node {
  // XML 1.0 forbids these even as text; xmldom does not check them.
  assert.ok(
    !/[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u.test(svg),
    "character not allowed in XML",
  );
  const doc = new DOMParser({
    onError: (level: string, msg: string) => {
      throw new Error(`XML ${level}: ${msg}`);
    },
  }).parseFromString(svg, "image/svg+xml");
  const root = doc.documentElement;
  assert.ok(root !== null, "no root element");
  assert.equal(root.tagName, "svg");
  assert.equal(root.getAttribute("xmlns"), "http://www.w3.org/2000/svg");
  return root;
}

const byTag = (el: Node, tag: string): Node[] =>
  Array.from(el.getElementsByTagName(tag));

interface Rect {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

function plotArea(root: Node): Rect {
  const rect = byTag(root, "rect").find((r) =>
    r.getAttribute("class") === "plot-area"
  );
  assert.ok(rect, "no plot-area rect");
  const n = (a: string) => Number(rect.getAttribute(a));
  return {
    x0: n("x"),
    y0: n("y"),
    x1: n("x") + n("width"),
    y1: n("y") + n("height"),
  };
}

/** Pixel points of one series group: polyline vertices and circle centres, in document order. */
function drawnPoints(
  group: Node,
): { line: Array<[number, number]>; circles: Array<[number, number]> } {
  const line = byTag(group, "polyline").flatMap((p) =>
    String(p.getAttribute("points")).trim().split(/\s+/).map((xy) =>
      xy.split(",").map(Number) as [number, number]
    )
  );
  const circles = byTag(group, "circle").map((c) =>
    [Number(c.getAttribute("cx")), Number(c.getAttribute("cy"))] as [
      number,
      number,
    ]
  );
  return { line, circles };
}

const seriesGroups = (root: Node): Node[] =>
  byTag(root, "g").filter((g) => g.getAttribute("class") === "series");

/** A mix of ordinary, huge, tiny, non-finite and repeated values. */
const coordinate = fc.oneof(
  { weight: 6, arbitrary: fc.double({ min: -1e6, max: 1e6, noNaN: true }) },
  { weight: 2, arbitrary: fc.double({ min: -1e12, max: 1e12, noNaN: true }) },
  { weight: 1, arbitrary: fc.double({ min: -1e-6, max: 1e-6, noNaN: true }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(NaN, Infinity, -Infinity, 0, 1, 3.25),
  },
);
const seriesArb: fc.Arbitrary<ChartSeries> = fc.record({
  name: fc.string({ unit: "binary", maxLength: 40 }),
  points: fc.array(fc.tuple(coordinate, coordinate), { maxLength: 30 }),
  color: fc.option(fc.string({ maxLength: 12 }), { nil: undefined }),
  style: fc.option(
    fc.constantFrom("line", "markers", "step") as fc.Arbitrary<
      "line" | "markers" | "step"
    >,
    { nil: undefined },
  ),
});
const chartArb = fc.record({
  title: fc.string({ unit: "binary", maxLength: 120 }),
  xLabel: fc.string({ unit: "binary", maxLength: 30 }),
  yLabel: fc.string({ unit: "binary", maxLength: 30 }),
  series: fc.array(seriesArb, { maxLength: 5 }),
  logY: fc.boolean(),
});

Deno.test("arbitrary charts are well-formed SVG; every finite point is drawn inside the plot area, in order", () => {
  fc.assert(
    fc.property(chartArb, (opts) => {
      const root = parseSvg(lineChartSvg(opts));
      assert.ok(!/NaN|Infinity/.test(lineChartSvg(opts)));
      const area = plotArea(root);
      const groups = seriesGroups(root);
      assert.equal(groups.length, opts.series.length);
      opts.series.forEach((s, i) => {
        const usable = s.points.filter(([x, y]) =>
          Math.abs(x) <= 1e300 && Math.abs(y) <= 1e300 &&
          (!opts.logY || (y >= 1e-250 && y <= 1e250))
        );
        const { line, circles } = drawnPoints(groups[i]);
        for (const [px, py] of [...line, ...circles]) {
          assert.ok(
            px >= area.x0 - 1e-9 && px <= area.x1 + 1e-9 &&
              py >= area.y0 - 1e-9 && py <= area.y1 + 1e-9,
            `(${px}, ${py}) outside ${JSON.stringify(area)}`,
          );
        }
        const style = s.style ?? "line";
        if (style === "markers") {
          assert.equal(circles.length, usable.length);
        } else if (style === "step") {
          // A marker per point, and the line has each point plus a corner before each jump.
          assert.equal(circles.length, usable.length);
          assert.equal(
            line.length,
            usable.length >= 2 ? 2 * usable.length - 1 : 0,
          );
        } else {
          // Runs of >= 2 finite points are lines, isolated ones are dots: each point drawn once.
          assert.equal(line.length + circles.length, usable.length);
        }
        // The drawn position is a monotone function of the data (y grows upwards).
        const inCircleOrder = style === "step"
          ? [...usable].sort((a, b) => a[0] - b[0])
          : usable;
        const pairs = style === "line"
          ? []
          : inCircleOrder.map((p, j) => [p, circles[j]] as const);
        for (const [a, pa] of pairs) {
          for (const [b, pb] of pairs) {
            if (a[0] < b[0]) assert.ok(pa[0] <= pb[0] + 0.011);
            if (a[1] < b[1]) assert.ok(pa[1] >= pb[1] - 0.011);
          }
        }
      });
    }),
    { numRuns: 150 },
  );
});

Deno.test("titles, names and colours with markup and control characters are escaped", () => {
  const svg = lineChartSvg({
    title: `<script>alert("x")</script> & 'q' \u0001\uD800`,
    xLabel: "a<b",
    yLabel: "c&d",
    series: [{ name: "</text>", points: [[0, 1], [1, 2]], color: `red" x="` }],
  });
  const root = parseSvg(svg);
  assert.equal(byTag(root, "script").length, 0);
  const texts = byTag(root, "text").map((t) => t.textContent);
  assert.ok(texts.includes(`<script>alert("x")</script> & 'q' `));
  assert.ok(texts.includes("a<b") && texts.includes("c&d"));
  assert.ok(texts.includes("</text>"));
  assert.equal(byTag(root, "polyline")[0].getAttribute("stroke"), `red" x="`);
});

Deno.test("empty, single-point, constant and all-NaN series draw without NaN", () => {
  const cases: ChartSeries[][] = [
    [],
    [{ name: "empty", points: [] }],
    [{ name: "one", points: [[3, 7]] }],
    [{ name: "one", points: [[3, 7]], style: "markers" }],
    [{ name: "flat", points: [[0, 2], [1, 2], [2, 2]] }],
    [{ name: "flat zero", points: [[5, 0], [5, 0]] }],
    [{ name: "nan", points: [[NaN, 1], [1, Infinity], [-Infinity, 2]] }],
  ];
  for (const series of cases) {
    for (const logY of [false, true]) {
      const svg = lineChartSvg({
        title: "t",
        xLabel: "x",
        yLabel: "y",
        series,
        logY,
      });
      assert.ok(!/NaN|Infinity/.test(svg), svg);
      const root = parseSvg(svg);
      const area = plotArea(root);
      assert.ok(area.x1 > area.x0 && area.y1 > area.y0);
    }
  }
  // One point: a dot in the middle area, not an invisible one-vertex polyline.
  const root = parseSvg(
    lineChartSvg({
      title: "t",
      xLabel: "x",
      yLabel: "y",
      series: [{ name: "one", points: [[3, 7]] }],
    }),
  );
  assert.equal(byTag(root, "polyline").length, 0);
  assert.equal(byTag(seriesGroups(root)[0], "circle").length, 1);
  // No finite point at all: the chart says so.
  const empty = parseSvg(
    lineChartSvg({ title: "t", xLabel: "x", yLabel: "y", series: [] }),
  );
  assert.ok(byTag(empty, "text").some((t) => t.textContent === "no data"));
});

Deno.test("a NaN breaks a line into two polylines", () => {
  const root = parseSvg(lineChartSvg({
    title: "t",
    xLabel: "x",
    yLabel: "y",
    series: [{ name: "s", points: [[0, 1], [1, 2], [2, NaN], [3, 1], [4, 0]] }],
  }));
  const lines = byTag(root, "polyline");
  assert.equal(lines.length, 2);
  assert.equal(String(lines[0].getAttribute("points")).split(" ").length, 2);
  assert.equal(String(lines[1].getAttribute("points")).split(" ").length, 2);
});

/** `step = m · 10^e` with m ∈ {1, 2, 5}. */
function assertNiceStep(step: number): void {
  const e = Math.floor(Math.log10(step) + 1e-9);
  const m = step / 10 ** e;
  assert.ok(
    [1, 2, 5].some((c) => Math.abs(m - c) < 1e-9),
    `step ${step} is not 1, 2 or 5 times a power of ten`,
  );
}

function assertLinearTicks(t: Ticks, min: number, max: number, target: number) {
  assertNiceStep(t.step);
  assert.ok(t.values.length >= 2);
  assert.ok(t.values.length - 1 <= target, `${t.values.length - 1} intervals`);
  assert.ok(t.values[0] <= min && t.values[t.values.length - 1] >= max);
  t.values.forEach((v, i) => {
    // Each tick is an integer multiple of the step, evenly spaced, and printed as a short decimal.
    const k = v / t.step;
    assert.ok(
      Math.abs(k - Math.round(k)) < 1e-6,
      `${v} not a multiple of ${t.step}`,
    );
    if (i > 0) {
      const gap = v - t.values[i - 1];
      assert.ok(Math.abs(gap - t.step) <= 1e-9 * Math.max(Math.abs(v), t.step));
    }
    assert.ok(Number(v.toPrecision(12)) === v, `${v} is not a short decimal`);
  });
}

Deno.test("niceTicks: 1-2-5 steps, multiples of the step, covering the range with at most `target` intervals", () => {
  fc.assert(
    fc.property(
      fc.double({ min: -1e9, max: 1e9, noNaN: true }),
      fc.double({ min: -1e9, max: 1e9, noNaN: true }),
      fc.integer({ min: 2, max: 12 }),
      (a, b, target) => {
        const [min, max] = a <= b ? [a, b] : [b, a];
        assertLinearTicks(niceTicks(min, max, target), min, max, target);
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("niceTicks: the step is the smallest nice one that fits", () => {
  fc.assert(
    fc.property(
      fc.double({ min: -1e6, max: 1e6, noNaN: true }),
      fc.double({ min: 1e-3, max: 1e6, noNaN: true }),
      fc.integer({ min: 2, max: 10 }),
      (min, span, target) => {
        const max = min + span;
        // Narrower ranges are widened first (see the degenerate-range test).
        fc.pre(span > 1e-8 * Math.max(Math.abs(min), Math.abs(max)));
        const t = niceTicks(min, max, target);
        // The next smaller 1-2-5 step needs more than `target` intervals.
        const e = Math.floor(Math.log10(t.step) + 1e-9);
        const m = Math.round(t.step / 10 ** e);
        const [sm, se] = m === 1 ? [5, e - 1] : m === 2 ? [1, e] : [2, e];
        // Intervals of that step that cover [min, max], tick values compared exactly.
        const tick = (k: number) => Number(`${k * sm}e${se}`);
        let k0 = Math.floor(min / tick(1)) + 1;
        while (tick(k0) > min) k0--;
        let k1 = Math.ceil(max / tick(1)) - 1;
        while (tick(k1) < max) k1++;
        assert.ok(
          k1 - k0 > target,
          `step ${tick(1)} would also fit ${min}..${max}`,
        );
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("niceTicks: known answers and degenerate ranges", () => {
  assert.deepEqual(niceTicks(0, 1, 5).values, [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0.1, 0.7, 6).values, [
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
  ]);
  assert.deepEqual(niceTicks(3, 97, 5).values, [0, 20, 40, 60, 80, 100]);
  assert.deepEqual(niceTicks(-3.2, 4.1, 8).values, [-4, -2, 0, 2, 4, 6]);
  // A constant is widened by 10%: 5 → 4.5..5.5.
  const c = niceTicks(5, 5, 5);
  assertLinearTicks(c, 4.5, 5.5, 5);
  assert.ok(c.values[0] < 5 && c.values[c.values.length - 1] > 5);
  assertLinearTicks(niceTicks(0, 0, 5), -1, 1, 5);
  assert.throws(() => niceTicks(NaN, 1), /min and max/);
  assert.throws(() => niceTicks(2, 1), /min <= max/);
  assert.throws(() => niceTicks(0, 1, 1), /target/);
  assert.throws(() => niceTicks(-1.7e308, 1.7e308), /wider/);
});

Deno.test("logTicks: whole decades covering the range, with 2 and 5 on short ranges", () => {
  fc.assert(
    fc.property(
      fc.double({ min: 1e-250, max: 1e250, noNaN: true }),
      fc.double({ min: 1e-250, max: 1e250, noNaN: true }),
      (a, b) => {
        const [min, max] = a <= b ? [a, b] : [b, a];
        const t = logTicks(min, max);
        assert.ok(t.values[0] <= min && t.values[t.values.length - 1] >= max);
        assert.ok(t.values.length >= 2 && t.values.length <= 12);
        for (const v of t.values) {
          assert.match(String(v.toExponential()), /^[125]e[-+]\d+$/);
        }
        // Beyond two decades the ends are powers of ten; within, the range is tight.
        const [first, last] = [t.values[0], t.values[t.values.length - 1]];
        if (last / first > 100.0001) {
          assert.match(first.toExponential(), /^1e/);
          assert.match(last.toExponential(), /^1e/);
        } else {
          assert.ok(t.values[1] > min || t.values.length === 2);
          assert.ok(
            t.values[t.values.length - 2] < max || t.values.length === 2,
          );
        }
        for (let i = 1; i < t.values.length; i++) {
          assert.ok(t.values[i] > t.values[i - 1]);
        }
      },
    ),
    { numRuns: 1000 },
  );
  assert.deepEqual(logTicks(2.5, 7.9).values, [2, 5, 10]);
  assert.deepEqual(logTicks(2.5, 11).values, [2, 5, 10, 20]);
  assert.deepEqual(logTicks(3, 90).values, [2, 5, 10, 20, 50, 100]);
  assert.deepEqual(logTicks(3, 300).values, [1, 10, 100, 1000]);
  assert.deepEqual(logTicks(10, 10).values, [10, 20]);
  assert.deepEqual(logTicks(0.2, 0.2).values, [0.2, 0.5]);
  assert.deepEqual(logTicks(1e-20, 1e20).values.length, 11);
  assert.throws(() => logTicks(0, 1), /1e-250 <= min/);
  assert.throws(() => logTicks(1, 1e251), /max <= 1e250/);
  // Coarse ticks on a very wide range stay positive and finite.
  const wide = logTicks(1e-250, 1e250).values;
  assert.ok(wide[0] > 0 && Number.isFinite(wide[wide.length - 1]));
  const odd = logTicks(1e-250, 1.0000000000000001e-40).values;
  assert.ok(odd[0] > 0 && odd[0] <= 1e-250);
});

Deno.test("ema: bias-corrected known answers, NaN skipped", () => {
  assert.deepEqual(ema([1, 1, 1], 0.9), [1, 1, 1].map(() => 1));
  const [a, b] = ema([2, 4], 0.5);
  assert.ok(Math.abs(a - 2) < 1e-12);
  // s2 = 0.5·1 + 0.5·4 = 2.5; corrected by 1 − 0.25.
  assert.ok(Math.abs(b - 2.5 / 0.75) < 1e-12);
  const c = ema([2, NaN, 4], 0.5);
  assert.ok(Number.isNaN(c[1]) && Math.abs(c[2] - b) < 1e-12);
  assert.deepEqual(ema([3, 5], 0), [3, 5]);
  assert.throws(() => ema([1], 1), /beta/);
  fc.assert(fc.property(
    fc.array(fc.double({ min: -100, max: 100, noNaN: true }), {
      minLength: 1,
      maxLength: 50,
    }),
    fc.double({ min: 0, max: 0.99, noNaN: true }),
    (xs, beta) => {
      // A weighted mean: stays within the range of the values seen so far.
      const s = ema(xs, beta);
      let lo = Infinity, hi = -Infinity;
      xs.forEach((x, i) => {
        lo = Math.min(lo, x);
        hi = Math.max(hi, x);
        assert.ok(s[i] >= lo - 1e-9 && s[i] <= hi + 1e-9);
      });
    },
  ));
});

const step = (i: number, loss: number) => ({
  step: i,
  loss,
  lr: 1e-3,
  lambda: 1,
  tokensPerSecond: 1000,
  elapsedSeconds: i,
  tokens: i * 4096,
});

Deno.test("lossCurveSvg: raw, EMA and validation series against tokens or steps", () => {
  const train = Array.from(
    { length: 50 },
    (_, i) => step(i + 1, 8 - (i + 1) / 10),
  );
  const evals = [10, 20, 30].map((s) => ({
    step: s,
    valLoss: 8 - s / 10,
    valPpl: Math.exp(8 - s / 10),
    tokens: s * 4096,
  }));
  const root = parseSvg(lossCurveSvg({ train, eval: evals }));
  const groups = seriesGroups(root);
  assert.equal(groups.length, 3);
  assert.equal(drawnPoints(groups[0]).line.length, 50);
  assert.equal(drawnPoints(groups[1]).line.length, 50);
  assert.equal(drawnPoints(groups[2]).circles.length, 3);
  const texts = byTag(root, "text").map((t) => t.textContent);
  assert.ok(texts.includes("training tokens"));
  // A validation marker sits where the raw line has the same (x, y).
  const raw = drawnPoints(groups[0]).line;
  const [vx, vy] = drawnPoints(groups[2]).circles[0];
  assert.ok(
    raw.some(([x, y]) => Math.abs(x - vx) < 0.02 && Math.abs(y - vy) < 0.02),
  );

  const bySteps = parseSvg(
    lossCurveSvg({ train, eval: evals }, { x: "steps", smoothing: 0 }),
  );
  assert.equal(seriesGroups(bySteps).length, 2);
  assert.ok(byTag(bySteps, "text").some((t) => t.textContent === "step"));
  parseSvg(lossCurveSvg({ train: [], eval: [] }));
});

Deno.test("scatterFrontierSvg: candidates as markers with tooltips, the frontier as a step line", () => {
  const MiB = 1024 * 1024;
  const points = [
    { bytes: 10 * MiB, ppl: 80, label: "all <2> bits" },
    { bytes: 20 * MiB, ppl: 40 },
    { bytes: 25 * MiB, ppl: 60 },
    { bytes: 40 * MiB, ppl: 30, label: "8 & 4" },
  ];
  const frontier = [points[0], points[1], points[3]];
  const root = parseSvg(scatterFrontierSvg({ points, frontier }));
  const [cands, front] = seriesGroups(root);
  assert.equal(byTag(cands, "circle").length, 4);
  const titles = byTag(cands, "title").map((t) => t.textContent);
  assert.deepEqual(titles, ["all <2> bits", "8 & 4"]);
  const { line, circles } = drawnPoints(front);
  assert.equal(circles.length, 3);
  assert.equal(line.length, 5);
  // Horizontal then vertical: each corner has the next x and the previous y.
  for (let i = 1; i < line.length; i += 2) {
    assert.equal(line[i][0], line[i + 1][0]);
    assert.equal(line[i][1], line[i - 1][1]);
  }
  // Sizes are in MiB on the x axis.
  assert.ok(byTag(root, "text").some((t) => t.textContent === "size (MiB)"));
});

Deno.test("too small a canvas is refused, naming the argument", () => {
  const base = { title: "t", xLabel: "x", yLabel: "y", series: [] };
  assert.throws(() => lineChartSvg({ ...base, width: 50 }), /width/);
  assert.throws(() => lineChartSvg({ ...base, height: NaN }), /height/);
});
