// Page controllers: read the range from the URL, fetch the JSON endpoints with it, draw, and
// poll every few seconds. Changing the range rewrites the URL (shareable) without a reload.
import { barChart, funnelChart, lineChart } from "./charts.js";

const body = document.body;
const POLL_MS = Number(body.dataset.pollSeconds || 5) * 1000;
const CURRENCY = body.dataset.currency || "USD";
const money = (v) => new Intl.NumberFormat("en", { style: "currency", currency: CURRENCY }).format(v);
const moneyCompact = (v) => new Intl.NumberFormat("en", {
  style: "currency", currency: CURRENCY, notation: "compact", maximumFractionDigits: 1,
}).format(v);
const percent = (v) => `${(v * 100).toFixed(1)}%`;
const integer = (v) => Math.round(v).toLocaleString("en");

async function getJSON(path) {
  const response = await fetch(`${path}${location.search}`, { headers: { accept: "application/json" } });
  if (response.status === 401) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new Error("signed out");
  }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function setStatus(text, failed = false) {
  const status = document.getElementById("live-status");
  if (!status) return;
  status.textContent = text;
  status.classList.toggle("failed", failed);
}

const KPI_FORMATS = {
  events: integer, unique_visitors: integer, orders: integer, active_sessions: integer,
  revenue: money, conversion_rate: percent, average_order_value: money,
};

function renderKpis(data) {
  for (const card of document.querySelectorAll("[data-kpi]")) {
    const name = card.dataset.kpi;
    const value = card.querySelector(".value");
    const change = card.querySelector(".change");
    if (name === "active_sessions") {
      value.textContent = integer(data.active_sessions.last_5m);
      change.textContent = `${integer(data.active_sessions.last_30m)} in the last 30 min`;
      change.className = "change";
      continue;
    }
    const kpi = data.kpis[name];
    const estimate = kpi.approximate ? "≈ " : "";
    value.textContent = kpi.value === null ? "–" : estimate + KPI_FORMATS[name](kpi.value);
    value.title = kpi.approximate ? "estimated from a 1/16 sample of visitors" : "";
    if (kpi.change === null) {
      change.textContent = "no previous period data";
      change.className = "change";
    } else {
      const sign = kpi.change > 0 ? "▲" : kpi.change < 0 ? "▼" : "=";
      change.textContent = `${sign} ${percent(Math.abs(kpi.change))} vs previous period`;
      change.className = `change ${kpi.change >= 0 ? "up" : "down"}`;
    }
  }
  document.getElementById("empty-state").hidden = data.has_data;
  renderUnconverted(data.unconverted);
}

// Orders in a currency without an exchange rate: not in the revenue figures, named apart in
// their own currency (never added to the reporting currency's sums).
function renderUnconverted(rows) {
  const note = document.getElementById("unconverted-revenue");
  note.hidden = rows.length === 0;
  const amounts = rows.map((row) => {
    const amount = new Intl.NumberFormat("en", { style: "currency", currency: row.currency })
      .format(row.revenue);
    return `${integer(row.orders)} ${row.orders === 1 ? "order" : "orders"} in ${row.currency} (${amount})`;
  });
  note.textContent = rows.length === 0 ? "" :
    `Not in revenue (no ${CURRENCY} exchange rate for their day): ${amounts.join(", ")}. ` +
    "Orders processed after clickstream rates load has loaded their day's rate are converted.";
}

function bucketWord(seconds) {
  return { 60: "minute", 900: "15 minutes", 3600: "hour", 86400: "day" }[seconds] || `${seconds} s`;
}

// Buckets the range cuts at either end, or that are still filling (past `until`): their sums
// are not comparable with the others', so charts mark them instead of showing a drop.
function partialBuckets(data) {
  const from = Date.parse(data.range.from), until = Date.parse(data.range.until);
  const step = data.range.bucket_seconds * 1000;
  return data.buckets.map((bucket) => {
    const start = Date.parse(bucket);
    return start < from || start + step > until;
  });
}

function renderTimeseries(data) {
  const seconds = data.range.bucket_seconds;
  const partial = partialBuckets(data);
  lineChart(document.getElementById("chart-events"), {
    buckets: data.buckets,
    bucketSeconds: seconds,
    series: Object.entries(data.events).map(([name, values]) => ({ name, values })),
    unit: `events per ${bucketWord(seconds)}`,
    partial,
  });
  lineChart(document.getElementById("chart-revenue"), {
    buckets: data.buckets,
    bucketSeconds: seconds,
    series: [{ name: "revenue", values: data.revenue }],
    unit: `revenue (${CURRENCY}) per ${bucketWord(seconds)}`,
    format: moneyCompact,
    partial,
  });
}

function renderProducts(data) {
  const label = (p) => p.product_name || p.product_id;
  for (const [board, format] of [["views", integer], ["carts", integer], ["revenue", money]]) {
    barChart(document.getElementById(`chart-products-${board}`), data.top[board].map((p) => ({
      label: label(p), value: p[board], detail: `${p.product_id}${p.category ? `, ${p.category}` : ""}`,
    })), { format });
  }
}

function renderTraffic(data) {
  barChart(document.getElementById("chart-referrers"),
    data.referrer_classes.map((r) => ({ label: r.name, value: r.sessions, detail: "sessions" })),
    { format: integer });
  const withUtm = data.sources.filter((s) => s.utm_source || s.utm_medium);
  barChart(document.getElementById("chart-sources"), withUtm.map((s) => ({
    label: `${s.utm_source || "–"} / ${s.utm_medium || "–"}`, value: s.sessions,
    detail: s.referrer_class,
  })), { format: integer, empty: "No sessions with UTM parameters in this range." });
}

function renderDevices(data) {
  const bars = (rows) => rows.map((r) => ({ label: r.name, value: r.sessions, detail: "sessions" }));
  barChart(document.getElementById("chart-devices"), bars(data.device_types), { format: integer });
  barChart(document.getElementById("chart-browsers"), bars(data.browsers.slice(0, 8)),
    { format: integer });
}

async function refreshOverview() {
  const [kpis, series, funnel, products, traffic, devices] = await Promise.all([
    getJSON("/api/kpis"), getJSON("/api/timeseries"), getJSON("/api/funnel"),
    getJSON("/api/products"), getJSON("/api/traffic"), getJSON("/api/devices"),
  ]);
  renderKpis(kpis);
  renderTimeseries(series);
  funnelChart(document.getElementById("chart-funnel"), funnel.steps);
  renderProducts(products);
  renderTraffic(traffic);
  renderDevices(devices);
}

function cell(row, text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

async function refreshBadEvents() {
  const data = await getJSON("/api/bad-events");
  document.getElementById("bad-total").textContent = `(${integer(data.total)} in range)`;
  document.getElementById("empty-state").hidden = data.total > 0;
  lineChart(document.getElementById("chart-bad"), {
    buckets: data.buckets,
    bucketSeconds: data.range.bucket_seconds,
    series: Object.entries(data.counts).map(([name, values]) => ({ name, values })),
    unit: `bad events per ${bucketWord(data.range.bucket_seconds)}`,
    partial: partialBuckets(data),
  });
  renderBadReasons(data);
  renderBadSamples(data);
}

// Per reason: still bad against replayed (`clickstream replay bad-events`). A reason filters
// the samples below it.
function renderBadReasons(data) {
  const tbody = document.querySelector("#bad-reasons tbody");
  tbody.replaceChildren();
  for (const entry of data.reasons) {
    const row = document.createElement("tr");
    cell(row, entry.reason_class);
    const reason = cell(row, "");
    const link = document.createElement("a");
    link.href = "#bad-samples";
    link.textContent = entry.reason;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      setBadEventsParams({ reason: entry.reason_class, reason_text: entry.reason, page: null });
    });
    reason.appendChild(link);
    cell(row, integer(entry.still_bad), "num");
    cell(row, integer(entry.replayed), "num");
    tbody.appendChild(row);
  }
  const select = document.getElementById("bad-reason-class");
  const classes = Object.keys(data.counts);
  const chosen = data.filter.reason_class;
  if (chosen && !classes.includes(chosen)) classes.push(chosen);
  select.replaceChildren(new Option("every reason", ""),
    ...classes.map((name) => new Option(name, name)));
  select.value = chosen || "";
  const only = document.getElementById("bad-reason-text");
  only.hidden = !data.filter.reason;
  document.getElementById("bad-reason-text-value").textContent = data.filter.reason || "";
}

function renderBadSamples(data) {
  const tbody = document.querySelector("#bad-samples tbody");
  tbody.replaceChildren();
  for (const sample of data.samples) {
    const row = document.createElement("tr");
    cell(row, sample.received_at.slice(0, 19).replace("T", " "));
    const reason = cell(row, sample.reason_class);
    reason.title = sample.reason;
    const detail = document.createElement("div");
    detail.className = "reason";
    detail.textContent = sample.reason;
    reason.appendChild(detail);
    if (sample.replayed_at) {
      const replayed = document.createElement("div");
      replayed.className = "replayed";
      replayed.textContent = `replayed ${sample.replayed_at.slice(0, 16).replace("T", " ")}`;
      reason.appendChild(replayed);
    }
    cell(row, sample.source || "–");
    const raw = cell(row, "");
    const pre = document.createElement("pre");
    // textContent, never innerHTML: the payload is untrusted input.
    pre.textContent = sample.raw + (sample.truncated ? `\n… (${sample.raw_bytes} bytes)` : "");
    raw.appendChild(pre);
    tbody.appendChild(row);
  }
  document.getElementById("bad-page-label").textContent =
    `page ${data.page} of ${data.pages} (${integer(data.matching)} samples)`;
  document.getElementById("bad-page-previous").disabled = data.page <= 1;
  document.getElementById("bad-page-next").disabled = data.page >= data.pages;
  document.getElementById("bad-page-next").dataset.page = data.page + 1;
  document.getElementById("bad-page-previous").dataset.page = data.page - 1;
}

// The filter and the page live in the URL (shareable, back button), like the range.
function setBadEventsParams(changes) {
  const params = new URLSearchParams(location.search);
  for (const [name, value] of Object.entries(changes)) {
    if (value) params.set(name, value);
    else params.delete(name);
  }
  history.pushState(null, "", `${location.pathname}?${params}`);
  refresh();
}

function setupBadEventsControls() {
  if (body.dataset.page !== "bad-events") return;
  document.getElementById("bad-reason-class").addEventListener("change", (event) => {
    setBadEventsParams({ reason: event.target.value, reason_text: null, page: null });
  });
  document.getElementById("bad-reason-text-clear").addEventListener("click", () => {
    setBadEventsParams({ reason_text: null, page: null });
  });
  for (const id of ["bad-page-previous", "bad-page-next"]) {
    const button = document.getElementById(id);
    button.addEventListener("click", () => setBadEventsParams({ page: button.dataset.page }));
  }
}

const PAGES = { overview: refreshOverview, "bad-events": refreshBadEvents };

let timer = null;
async function refresh() {
  const page = PAGES[body.dataset.page];
  if (!page) return;
  clearTimeout(timer);
  try {
    await page();
    setStatus(`live · ${new Date().toISOString().slice(11, 19)} UTC`);
    body.dataset.loaded = "true";
  } catch (error) {
    setStatus(`update failed: ${error.message}`, true);
  }
  timer = setTimeout(refresh, POLL_MS);
}

// A new range keeps the page's other parameters (search, order, filters) and starts its
// paging over. Live pages redraw in place; the others (the customer list) load it anew.
const RANGE_PARAMS = ["range", "from", "to"];
const PAGING_PARAMS = ["after", "before", "page"];

function withRange(range) {
  const params = new URLSearchParams(location.search);
  for (const name of [...RANGE_PARAMS, ...PAGING_PARAMS]) params.delete(name);
  for (const [name, value] of range) params.set(name, value);
  return params;
}

function setupRangeForm() {
  const form = document.getElementById("range-form");
  if (!form) return;
  const select = document.getElementById("range-select");
  const custom = document.getElementById("custom-range");
  const apply = (range) => {
    const url = `${location.pathname}?${withRange(range)}`;
    if (!PAGES[body.dataset.page]) {
      location.assign(url);
      return;
    }
    history.pushState(null, "", url);
    for (const link of document.querySelectorAll("header nav a, .brand")) {
      link.search = range.toString();
    }
    refresh();
  };
  select.addEventListener("change", () => {
    custom.hidden = select.value !== "custom";
    if (select.value !== "custom") apply(new URLSearchParams({ range: select.value }));
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const range = new URLSearchParams({ range: select.value });
    if (select.value === "custom") {
      range.set("from", document.getElementById("range-from").value);
      range.set("to", document.getElementById("range-to").value);
    }
    apply(range);
  });
  window.addEventListener("popstate", () => {
    const params = new URLSearchParams(location.search);
    select.value = params.get("range") || "24h";
    custom.hidden = select.value !== "custom";
    refresh();
  });
}

setupRangeForm();
setupBadEventsControls();
refresh();
