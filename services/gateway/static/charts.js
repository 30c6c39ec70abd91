// Horizontal bar charts drawn as inline SVG: one row per label, one bar per series.

import { h, s } from "./dom.js";

const WIDTH = 360;
const CHAR_W = 7.4; // width of one character of an 11px label, near enough
const VALUE_W = 64;
const BAR_H = 12;
const GAP = 4;
const ROW_PAD = 8;

/**
 * Return a <figure> with a bar chart.
 * rows: [{label, values: [number|null, ...]}], one value per series;
 * series: [{name, cls}]; format: number -> text; max: the full-width value (default: largest).
 */
export function barChart({ title, rows, series, format = String, max }) {
  const figure = h("figure", { class: "chart", dataset: { chart: title } }, h("figcaption", {}, title));
  if (!rows.length) {
    figure.append(h("p", { class: "muted" }, "no data yet"));
    return figure;
  }
  const values = rows.flatMap((row) => row.values).filter((v) => typeof v === "number");
  const top = max ?? Math.max(1e-9, ...values);
  const rowH = series.length * (BAR_H + GAP) - GAP + ROW_PAD;
  const height = rows.length * rowH;
  // Labels get the room their longest one needs, within bounds; the bars get the rest.
  const longest = Math.max(...rows.map((row) => String(row.label).length));
  const labelW = Math.min(180, Math.max(56, longest * CHAR_W + 10));
  const plotW = WIDTH - labelW - VALUE_W;
  const svg = s("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`,
    width: "100%",
    role: "img",
    "aria-label": title,
    preserveAspectRatio: "xMinYMin meet",
  });
  rows.forEach((row, i) => {
    const y0 = i * rowH + ROW_PAD / 2;
    svg.append(
      s("text", { x: labelW - 6, y: y0 + rowH / 2 - ROW_PAD / 2, class: "label", "text-anchor": "end",
        "dominant-baseline": "middle" }, row.label),
    );
    row.values.forEach((value, j) => {
      const y = y0 + j * (BAR_H + GAP);
      const known = typeof value === "number" && Number.isFinite(value);
      const w = known ? Math.max(value > 0 ? 1 : 0, (Math.min(value, top) / top) * plotW) : 0;
      svg.append(
        s("rect", { x: labelW, y, width: w.toFixed(1), height: BAR_H, rx: 2, class: `bar ${series[j].cls}` },
          s("title", {}, `${row.label} ${series[j].name}: ${known ? format(value) : "n/a"}`)),
        s("text", { x: labelW + w + 4, y: y + BAR_H / 2, class: "value", "dominant-baseline": "middle" },
          known ? format(value) : "n/a"),
      );
    });
  });
  figure.append(svg);
  if (series.length > 1) {
    figure.append(
      h("div", { class: "legend" },
        series.map((item) => h("span", {}, h("i", { class: `swatch ${item.cls}` }), item.name))),
    );
  }
  return figure;
}

const LINE_W = 720;
const LINE_H = 220;
const AXIS_W = 84; // room for the price labels on the left
const PAD = 10;
const TIME_H = 18; // room for the time labels below

/**
 * Return a <figure> with a line chart of prices over time, one line per series, each
 * point a dot. series: [{name, cls, points: [{at: ISO time, price: decimal string}]}],
 * oldest first; format: number -> text. The figure's dataset says how many points it
 * drew, and each series' group its last price, so a reader (or a test) can check them.
 */
export function lineChart({ title, series, format = String }) {
  const figure = h("figure", { class: "chart line-chart", dataset: { chart: title } }, h("figcaption", {}, title));
  const drawn = series
    .map((one) => ({
      ...one,
      points: one.points
        .map((p) => ({ t: new Date(p.at).getTime(), v: Number(p.price), price: p.price }))
        .filter((p) => Number.isFinite(p.t) && Number.isFinite(p.v)),
    }))
    .filter((one) => one.points.length);
  const all = drawn.flatMap((one) => one.points);
  figure.dataset.points = String(all.length);
  if (!all.length) {
    figure.append(h("p", { class: "muted" }, "no prices yet"));
    return figure;
  }
  // A flat market still gets a band to draw in: a thousandth of the price each side.
  let low = Math.min(...all.map((p) => p.v));
  let high = Math.max(...all.map((p) => p.v));
  if (high - low < Math.abs(high) * 1e-9) {
    low -= Math.abs(low) * 1e-3 || 1;
    high += Math.abs(high) * 1e-3 || 1;
  }
  let start = Math.min(...all.map((p) => p.t));
  const end = Math.max(...all.map((p) => p.t));
  if (end === start) start = end - 1000;
  const plotW = LINE_W - AXIS_W - PAD;
  const plotH = LINE_H - PAD - TIME_H;
  const x = (t) => AXIS_W + ((t - start) / (end - start)) * plotW;
  const y = (v) => PAD + (1 - (v - low) / (high - low)) * plotH;
  const svg = s("svg", {
    viewBox: `0 0 ${LINE_W} ${LINE_H}`,
    width: "100%",
    role: "img",
    "aria-label": title,
    preserveAspectRatio: "xMinYMin meet",
  });
  svg.append(
    s("line", { x1: AXIS_W, y1: PAD, x2: AXIS_W, y2: PAD + plotH, class: "axis" }),
    s("line", { x1: AXIS_W, y1: PAD + plotH, x2: AXIS_W + plotW, y2: PAD + plotH, class: "axis" }),
    s("text", { x: AXIS_W - 6, y: PAD, class: "label", "text-anchor": "end", "dominant-baseline": "hanging" },
      format(high)),
    s("text", { x: AXIS_W - 6, y: PAD + plotH, class: "label", "text-anchor": "end" }, format(low)),
    s("text", { x: AXIS_W, y: LINE_H - 4, class: "value" }, timeOf(start)),
    s("text", { x: AXIS_W + plotW, y: LINE_H - 4, class: "value", "text-anchor": "end" }, timeOf(end)),
  );
  for (const one of drawn) {
    const last = one.points[one.points.length - 1];
    const group = s("g", { class: `series ${one.cls}`, "data-series": one.name, "data-last": last.price,
      "data-points": one.points.length });
    // A price holds until the pool's next message: the line runs on to the chart's end.
    const held = last.t < end ? [{ t: end, v: last.v }] : [];
    group.append(
      s("polyline", { class: "line",
        points: [...one.points, ...held].map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ") }),
      ...one.points.map((p) =>
        s("circle", { class: "point", cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 2.5 },
          s("title", {}, `${one.name} ${timeOf(p.t)}: ${p.price}`))),
    );
    svg.append(group);
  }
  figure.append(svg);
  figure.append(
    h("div", { class: "legend" },
      drawn.map((one) => h("span", { dataset: { series: one.name } }, h("i", { class: `swatch ${one.cls}` }),
        `${one.name} ${format(one.points[one.points.length - 1].v)}`))),
  );
  return figure;
}

function timeOf(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}
