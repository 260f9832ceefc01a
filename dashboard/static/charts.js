// SVG charts for the dashboard, written for it: time series (lines), horizontal bars, funnel.
// Every mark carries an SVG <title>, which browsers show as a tooltip on hover.

const SVG = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2",
  "#db2777", "#65a30d", "#64748b"];

function el(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function titled(node, text) {
  el("title", {}, node).textContent = text;
  return node;
}

// Round tick steps: 1, 2 or 5 times a power of ten.
export function niceTicks(max, count = 4) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const ticks = [];
  for (let v = 0; v <= max + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

export function compact(value) {
  return new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 }).format(value);
}

function timeLabel(date, bucketSeconds) {
  const iso = date.toISOString();
  if (bucketSeconds >= 86400) return iso.slice(5, 10);
  if (bucketSeconds >= 3600) return `${iso.slice(5, 10)} ${iso.slice(11, 16)}`;
  return iso.slice(11, 16);
}

function clear(container) {
  while (container.firstChild) container.removeChild(container.firstChild);
}

function emptyNote(container, text) {
  clear(container);
  const note = document.createElement("p");
  note.className = "chart-empty";
  note.textContent = text;
  container.appendChild(note);
}

// series: [{name, values}], buckets: ISO strings; unit: axis title; format: value -> text.
export function lineChart(container, { buckets, series, bucketSeconds, unit, format = compact }) {
  const total = series.reduce((sum, s) => sum + s.values.reduce((a, b) => a + b, 0), 0);
  if (!buckets.length || total === 0) {
    emptyNote(container, "No data in this range.");
    return;
  }
  clear(container);
  // Drawn at the container's pixel width, so text keeps its size on any screen.
  const width = Math.max(320, container.clientWidth || 640);
  const height = 220, left = 64, right = 12, top = 12, bottom = 34;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    class: "line-chart" }, container);
  titled(svg, unit);
  const max = Math.max(...series.flatMap((s) => s.values));
  const ticks = niceTicks(max);
  const yMax = ticks[ticks.length - 1];
  const plotW = width - left - right, plotH = height - top - bottom;
  const x = (i) => left + (buckets.length === 1 ? plotW / 2 : (i / (buckets.length - 1)) * plotW);
  const y = (v) => top + plotH - (v / yMax) * plotH;
  const axis = el("g", { class: "axis" }, svg);
  for (const tick of ticks) {
    el("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "grid" }, axis);
    el("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, axis).textContent =
      format(tick);
  }
  const dates = buckets.map((b) => new Date(b));
  const every = Math.max(1, Math.ceil(buckets.length / Math.max(2, Math.floor(plotW / 110))));
  for (let i = 0; i < buckets.length; i += every) {
    // Labels at the edges are anchored inwards so they are never cut off.
    const anchor = x(i) > width - right - 40 ? "end" : x(i) < left + 40 ? "start" : "middle";
    el("text", { x: x(i), y: height - bottom + 16, "text-anchor": anchor }, axis).textContent =
      timeLabel(dates[i], bucketSeconds);
  }
  el("text", { x: left, y: height - 2, class: "unit" }, axis).textContent = `${unit} (UTC)`;
  series.forEach((s, index) => {
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const line = el("polyline", {
      points, fill: "none", stroke: PALETTE[index % PALETTE.length], "stroke-width": 2,
      class: "series", "data-series": s.name,
    }, svg);
    titled(line, s.name);
  });
  // One transparent column per bucket: hovering shows every series' value at that time.
  const hover = el("g", { class: "hover" }, svg);
  const columnW = buckets.length > 1 ? plotW / (buckets.length - 1) : plotW;
  dates.forEach((date, i) => {
    const column = el("rect", {
      x: x(i) - columnW / 2, y: top, width: columnW, height: plotH, fill: "transparent",
    }, hover);
    const lines = series.map((s) => `${s.name}: ${format(s.values[i])}`);
    titled(column, `${date.toISOString().slice(0, 16).replace("T", " ")} UTC\n${lines.join("\n")}`);
  });
  if (series.length > 1) legend(container, series.map((s) => s.name));
}

function legend(container, names) {
  const list = document.createElement("ul");
  list.className = "legend";
  names.forEach((name, index) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch swatch-${index % PALETTE.length}`;
    item.append(swatch, name);
    list.appendChild(item);
  });
  container.appendChild(list);
}

// items: [{label, value, detail?}] drawn as labelled horizontal bars.
export function barChart(container, items, { format = compact, empty = "No data in this range." } = {}) {
  if (!items.length) {
    emptyNote(container, empty);
    return;
  }
  clear(container);
  const rowH = 24, labelW = 150, valueW = 80;
  const width = Math.max(300, container.clientWidth || 420);
  const height = items.length * rowH + 4;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "bar-chart" },
    container);
  const max = Math.max(...items.map((item) => item.value), 1e-9);
  items.forEach((item, i) => {
    const g = el("g", { class: "bar", transform: `translate(0 ${i * rowH})` }, svg);
    const label = item.label.length > 22 ? `${item.label.slice(0, 21)}…` : item.label;
    el("text", { x: 0, y: 16, class: "label" }, g).textContent = label;
    const barW = Math.max(1, ((width - labelW - valueW) * item.value) / max);
    el("rect", { x: labelW, y: 4, width: barW, height: rowH - 8, rx: 2,
      fill: PALETTE[0] }, g);
    el("text", { x: labelW + barW + 6, y: 16, class: "value" }, g).textContent =
      format(item.value);
    titled(g, `${item.label}: ${format(item.value)}${item.detail ? ` (${item.detail})` : ""}`);
  });
}

// steps: [{step, sessions, rate_from_previous, drop_off}]
export function funnelChart(container, steps) {
  const items = steps.map((s) => ({
    label: s.step.replaceAll("_", " "),
    value: s.sessions,
    detail: s.drop_off === null ? "entry" : `${(s.drop_off * 100).toFixed(1)}% drop-off`,
  }));
  if (!steps.some((s) => s.sessions > 0)) {
    emptyNote(container, "No sessions reached the funnel in this range.");
    return;
  }
  barChart(container, items, { format: (v) => v.toLocaleString("en") });
  const notes = document.createElement("p");
  notes.className = "funnel-notes";
  notes.textContent = steps.slice(1).map((s) => (s.rate_from_previous === null
    ? `${s.step}: –` : `→ ${s.step.replaceAll("_", " ")} ${(s.rate_from_previous * 100).toFixed(1)}%`)).join("  ");
  container.appendChild(notes);
}
