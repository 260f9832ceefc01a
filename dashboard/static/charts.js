// SVG charts for the dashboard, written for it: time series (lines), horizontal bars, funnel.
// Line charts show a crosshair with every series' value on hover; bars carry an SVG <title>.

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

// Where the line runs between neighbouring points: one polyline per run of solid (complete)
// or dashed (touching a partial bucket) segments.
function runs(count, partial) {
  const result = [];
  for (let i = 0; i < count - 1; i += 1) {
    const dashed = Boolean(partial[i] || partial[i + 1]);
    const last = result[result.length - 1];
    if (last && last.dashed === dashed) last.to = i + 1;
    else result.push({ from: i, to: i + 1, dashed });
  }
  return result;
}

// The bucket a point stands for: its day, or its first minute.
function bucketName(date, bucketSeconds) {
  const iso = date.toISOString();
  return `${bucketSeconds >= 86400 ? iso.slice(0, 10) : iso.slice(0, 16).replace("T", " ")} UTC`;
}

// series: [{name, values}], buckets: ISO strings; unit: axis title; format: value -> text;
// partial: per bucket, true where the bucket is incomplete (still filling, or cut by the
// range): drawn dashed and named in the legend and the hover box, so it never reads as a drop.
export function lineChart(container, {
  buckets, series, bucketSeconds, unit, format = compact, partial = [],
}) {
  const total = series.reduce((sum, s) => sum + s.values.reduce((a, b) => a + b, 0), 0);
  if (!buckets.length || total === 0) {
    emptyNote(container, "No data in this range.");
    return;
  }
  clear(container);
  // Drawn at the container's pixel width, so text keeps its size on any screen.
  const width = Math.max(200, container.clientWidth || 640);
  const height = 220, left = 64, right = 12, top = 12, bottom = 34;
  // Named by aria-label, not a <title>: a title would pop up over the hover box.
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": unit, class: "line-chart" }, container);
  const max = Math.max(...series.flatMap((s) => s.values));
  const ticks = niceTicks(max);
  const yMax = ticks[ticks.length - 1];
  const plotW = width - left - right, plotH = height - top - bottom;
  const step = buckets.length > 1 ? plotW / (buckets.length - 1) : plotW;
  const x = (i) => left + (buckets.length === 1 ? plotW / 2 : i * step);
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
  // Partial buckets get a shaded band half a step either side (inside the plot).
  partial.forEach((isPartial, i) => {
    if (!isPartial) return;
    const from = Math.max(left, x(i) - step / 2), to = Math.min(width - right, x(i) + step / 2);
    el("rect", { x: from, y: top, width: to - from, height: plotH, class: "partial-band",
      "data-bucket": buckets[i] }, svg);
  });
  const segments = runs(buckets.length, partial);
  series.forEach((s, index) => {
    const g = el("g", { class: "series", "data-series": s.name }, svg);
    for (const run of segments) {
      const points = s.values.slice(run.from, run.to + 1)
        .map((v, k) => `${x(run.from + k).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      el("polyline", {
        points, fill: "none", stroke: PALETTE[index % PALETTE.length], "stroke-width": 2,
        ...(run.dashed ? { "stroke-dasharray": "4 4", class: "partial" } : {}),
      }, g);
    }
  });
  crosshair(container, svg, { buckets: dates, bucketSeconds, series, partial, format, x, y, step,
    plot: { left, top, width: plotW, height: plotH } });
  legend(container, series.map((s) => s.name), partial.some(Boolean));
}

// Hovering (or touching) the plot shows a vertical line at the nearest bucket, a dot on every
// series there, and a box with the time and every series' value.
function crosshair(container, svg, {
  buckets, bucketSeconds, series, partial, format, x, y, step, plot,
}) {
  const group = el("g", { class: "crosshair", visibility: "hidden" }, svg);
  const line = el("line", { y1: plot.top, y2: plot.top + plot.height }, group);
  const dots = series.map((s, index) => el("circle", { r: 3.5,
    fill: PALETTE[index % PALETTE.length] }, group));
  const box = document.createElement("div");
  box.className = "chart-tooltip";
  box.hidden = true;
  container.appendChild(box);
  const area = el("rect", { x: plot.left, y: plot.top, width: plot.width, height: plot.height,
    fill: "transparent", class: "hover-area" }, svg);
  const show = (event) => {
    const offset = event.clientX - svg.getBoundingClientRect().left;
    const i = Math.min(buckets.length - 1, Math.max(0, Math.round((offset - plot.left) / step)));
    line.setAttribute("x1", x(i));
    line.setAttribute("x2", x(i));
    series.forEach((s, index) => {
      dots[index].setAttribute("cx", x(i));
      dots[index].setAttribute("cy", y(s.values[i]));
    });
    group.setAttribute("visibility", "visible");
    const heading = document.createElement("strong");
    heading.textContent = bucketName(buckets[i], bucketSeconds) + (partial[i] ? " · partial" : "");
    const rows = series.map((s, index) => {
      const row = document.createElement("div");
      const swatch = document.createElement("span");
      swatch.className = `swatch swatch-${index % PALETTE.length}`;
      const value = document.createElement("b");
      value.textContent = format(s.values[i]);
      row.append(swatch, `${s.name} `, value);
      row.dataset.series = s.name;
      return row;
    });
    box.replaceChildren(heading, ...rows);
    box.dataset.bucket = buckets[i].toISOString();
    box.hidden = false;
    // Beside the line, on whichever side has room.
    const room = container.clientWidth - x(i) - 12;
    box.style.left = room > box.offsetWidth ? `${x(i) + 12}px` : "";
    box.style.right = room > box.offsetWidth ? "" : `${container.clientWidth - x(i) + 12}px`;
  };
  const follow = (event) => {
    container.hoverX = event.clientX;
    show(event);
  };
  area.addEventListener("pointermove", follow);
  area.addEventListener("pointerdown", follow);
  area.addEventListener("pointerleave", () => {
    container.hoverX = null;
    group.setAttribute("visibility", "hidden");
    box.hidden = true;
  });
  // Polling redraws the chart under a still pointer: keep showing what it points at.
  if (container.hoverX != null) show({ clientX: container.hoverX });
}

function legend(container, names, withPartial) {
  const list = document.createElement("ul");
  list.className = "legend";
  names.forEach((name, index) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch swatch-${index % PALETTE.length}`;
    item.append(swatch, name);
    list.appendChild(item);
  });
  if (withPartial) {
    const item = document.createElement("li");
    item.className = "partial-key";
    const swatch = document.createElement("span");
    swatch.className = "swatch swatch-partial";
    item.append(swatch, "partial bucket (still filling, or cut by the range)");
    list.appendChild(item);
  }
  container.appendChild(list);
}

// items: [{label, value, detail?}] drawn as labelled horizontal bars.
export function barChart(container, items, { format = compact, empty = "No data in this range." } = {}) {
  if (!items.length) {
    emptyNote(container, empty);
    return;
  }
  clear(container);
  const width = Math.max(200, container.clientWidth || 420);
  // Labels get up to 150 px, less on a narrow screen; about 6.5 px a character at 11 px.
  const rowH = 24, labelW = Math.min(150, Math.round(width * 0.38)), valueW = 80;
  const chars = Math.floor(labelW / 6.5);
  const height = items.length * rowH + 4;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "bar-chart" },
    container);
  const max = Math.max(...items.map((item) => item.value), 1e-9);
  items.forEach((item, i) => {
    const g = el("g", { class: "bar", transform: `translate(0 ${i * rowH})` }, svg);
    const label = item.label.length > chars ? `${item.label.slice(0, chars - 1)}…` : item.label;
    el("text", { x: 0, y: 16, class: "label" }, g).textContent = label;
    const barW = Math.max(1, ((width - labelW - valueW) * item.value) / max);
    el("rect", { x: labelW, y: 4, width: barW, height: rowH - 8, rx: 2,
      fill: PALETTE[0] }, g);
    el("text", { x: labelW + barW + 6, y: 16, class: "value" }, g).textContent =
      format(item.value);
    titled(g, `${item.label}: ${format(item.value)}${item.detail ? ` (${item.detail})` : ""}`);
  });
}

const stepLabel = (step) => step.replaceAll("_", " ");
const percentOf = (rate) => `${(rate * 100).toFixed(1)}%`;

// One line per step after the first, in the bars' words: "product view → add to cart: 12.1%",
// or, when no session reached the step before, "... : no rate (no product view)".
export function funnelNotes(steps) {
  return steps.slice(1).map((s, i) => {
    const before = stepLabel(steps[i].step);
    const rate = s.rate_from_previous === null ? `no rate (no ${before})` : percentOf(s.rate_from_previous);
    return `${before} → ${stepLabel(s.step)}: ${rate}`;
  });
}

// steps: [{step, sessions, rate_from_previous, drop_off}]
export function funnelChart(container, steps) {
  const items = steps.map((s, i) => ({
    label: stepLabel(s.step),
    value: s.sessions,
    detail: i === 0 ? "first step" : s.drop_off === null ? `no ${stepLabel(steps[i - 1].step)}`
      : `${percentOf(s.drop_off)} dropped off after ${stepLabel(steps[i - 1].step)}`,
  }));
  if (!steps.some((s) => s.sessions > 0)) {
    emptyNote(container, "No sessions reached the funnel in this range.");
    return;
  }
  barChart(container, items, { format: (v) => v.toLocaleString("en") });
  const notes = document.createElement("ul");
  notes.className = "funnel-notes";
  for (const text of funnelNotes(steps)) {
    const item = document.createElement("li");
    item.textContent = text;
    notes.appendChild(item);
  }
  container.appendChild(notes);
}
