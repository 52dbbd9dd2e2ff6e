/**
 * `frontier.svg`: size against perplexity of every evaluated map, the Pareto
 * frontier, the uniform maps, the reference, the limit and the choice.
 *
 * @module
 */
import { type ChartSeries, lineChartSvg } from "../train/svg_chart.ts";
import type { Evaluation, SearchResult } from "./search.ts";

const MIB = 2 ** 20;
const UNIFORM_COLORS: Readonly<Record<string, string>> = {
  binary: "#9467bd",
  ternary: "#1f77b4",
  eightbit: "#2ca02c",
  f16: "#8c564b",
};

const point = (e: Evaluation) => [e.bytes / MIB, e.ppl] as const;
const label = (e: Evaluation) =>
  `#${e.index} ${e.phase}: ${(e.bytes / MIB).toFixed(4)} MiB, ppl ${
    e.ppl.toFixed(3)
  } — ${JSON.stringify(e.map)}`;

/** The chart of a search as an SVG document. */
export function frontierSvg(result: SearchResult, title?: string): string {
  const evals = result.evaluations;
  const xs = evals.map((e) => e.bytes / MIB);
  const series: Array<ChartSeries> = [
    {
      name: "evaluated maps",
      points: evals.map(point),
      labels: evals.map(label),
      color: "#b0b0b0",
      style: "markers",
    },
    {
      name: "Pareto frontier",
      points: result.frontier.map(point),
      labels: result.frontier.map(label),
      color: "#d62728",
      style: "step",
      strokeWidth: 2,
    },
    ...result.uniform.map(({ mode, evaluation }) => ({
      name: `all ${mode}`,
      points: [point(evaluation)],
      labels: [label(evaluation)],
      color: UNIFORM_COLORS[mode],
      style: "markers" as const,
    })),
    {
      name: "reference (run's map)",
      points: [point(result.reference)],
      labels: [label(result.reference)],
      color: "#ff7f0e",
      style: "markers",
    },
    {
      name: `limit ppl ${result.maxPpl.toFixed(2)}`,
      points: [
        [Math.min(...xs), result.maxPpl],
        [Math.max(...xs), result.maxPpl],
      ],
      color: "#000000",
      strokeWidth: 1,
    },
  ];
  if (result.choice) {
    series.push({
      name: "chosen map",
      points: [point(result.choice)],
      labels: [label(result.choice)],
      color: "#e6007e",
      style: "markers",
    });
  }
  return lineChartSvg({
    title: title ?? "Bit-width search: size vs perplexity",
    xLabel: "size (MiB)",
    yLabel: "perplexity on the search windows",
    logY: false,
    series,
  });
}
