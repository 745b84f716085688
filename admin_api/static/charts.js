// The activity charts: uPlot (vendored, see uPlot.LICENSE) drawing the server's
// counter history (GET /api/v1/history). One chart per figure; each redraws in
// place when new points arrive and follows its container's width.
import { byteRate, count, perSecond } from "./format.js";

const COLORS = ["#2456c7", "#c2410c", "#067647", "#7e22ce", "#b42318", "#667085"];

export const SPECS = [
  { id: "devices", el: "chart-devices", fmt: count,
    series: [["devices", "devices"]] },
  { id: "commands", el: "chart-commands", fmt: perSecond, sum: true,
    series: [["commands.UED", "UED"], ["commands.SCS", "SCS"], ["commands.DTE", "DTE"],
             ["commands.AED", "AED"], ["commands.UVF", "UVF"], ["commands.other", "other"]] },
  { id: "upload", el: "chart-upload", fmt: byteRate,
    series: [["upload_bytes", "uploaded"]] },
  { id: "uvf", el: "chart-uvf", fmt: perSecond,
    series: [["uvf_announced", "announced"]] },
  { id: "logins", el: "chart-logins", fmt: perSecond,
    series: [["failed_logins", "failed logins"], ["blocks", "blocks"]] },
];

const HEIGHT = 150;

function axisValues(fmt) {
  return (u, values) => values.map((v) => fmt(v).replace("/s", ""));
}

function options(spec, width) {
  return {
    width, height: HEIGHT,
    cursor: { drag: { x: false, y: false } },
    legend: { show: spec.series.length > 1, live: true },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [
      { stroke: "#5d6778", grid: { stroke: "#eceff3" } },
      { stroke: "#5d6778", grid: { stroke: "#eceff3" }, size: 64, values: axisValues(spec.fmt) },
    ],
    series: [{ label: "time" }].concat(spec.series.map(([, label], i) => ({
      label, stroke: COLORS[i % COLORS.length], width: 1.5, points: { show: false },
      value: (u, v) => spec.fmt(v),
    }))),
  };
}

function latest(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
  return null;
}

export class Charts {
  constructor(root) {
    this.root = root;
    this.plots = {};
    this.points = {};
    this.ready = typeof window.uPlot === "function";
    this.draws = 0;
    if (!this.ready) {
      for (const spec of SPECS) {
        document.getElementById(spec.el).querySelector(".plot").textContent = "charts unavailable (uPlot did not load)";
      }
      return;
    }
    new ResizeObserver(() => this.resize()).observe(root);
  }

  width(spec) {
    const box = document.getElementById(spec.el).querySelector(".plot");
    return Math.max(120, Math.floor(box.clientWidth));
  }

  update(history) {
    if (!this.ready) return;
    const times = history.times;
    for (const spec of SPECS) {
      const columns = spec.series.map(([key]) => history.series[key] || times.map(() => null));
      const data = [times].concat(columns);
      this.points[spec.id] = data;
      let plot = this.plots[spec.id];
      if (!plot) {
        const box = document.getElementById(spec.el).querySelector(".plot");
        plot = new window.uPlot(options(spec, this.width(spec)), data, box);
        this.plots[spec.id] = plot;
      } else {
        plot.setData(data);
      }
      const now = spec.sum
        ? columns.reduce((s, col) => s + (latest(col) || 0), 0)
        : latest(columns[0]);
      document.getElementById(spec.el).querySelector(".now").textContent = "now " + spec.fmt(now);
    }
    this.draws++;
  }

  resize() {
    for (const spec of SPECS) {
      const plot = this.plots[spec.id];
      if (plot) {
        const w = this.width(spec);
        if (Math.abs(plot.width - w) > 2) plot.setSize({ width: w, height: HEIGHT });
      }
    }
  }
}
