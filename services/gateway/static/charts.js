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
