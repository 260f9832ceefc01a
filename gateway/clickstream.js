// clickstream browser tracker v1: a dependency-free ES module.
//
//   <script type="module">
//     import { init } from "https://collect.example.com/sdk/v1/clickstream.js";
//     const cs = init({ writeKey: "WRITE_KEY", endpoint: "https://collect.example.com" });
//     cs.productView({ product_id: "P1", name: "Trail shoe", price: 89.5, currency: "EUR" });
//   </script>
//
// Keeps an anonymous id (localStorage, else a first-party cookie), a session id (renewed after
// 30 minutes without activity), batches events and sends them with fetch(..., {keepalive})
// (JSON + Authorization header); on pagehide / visibilitychange:hidden it drains the queue with
// navigator.sendBeacon (text/plain body, write key in ?writeKey= since beacons carry no
// headers). Every event gets a client event_id (crypto.randomUUID), so a retry never double
// counts. Field names are the event contract's (snake_case), e.g. product_id, order_id.

const VERSION = "1";
const SESSION_TIMEOUT_MS = 30 * 60 * 1000;
// Browsers cap keepalive fetch and beacon bodies at 64 KiB in flight.
const MAX_BODY_BYTES = 60000;
const RETRYABLE = new Set([408, 429, 500, 502, 503, 504]);

function uuid() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16)); // non-secure contexts lack randomUUID
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function storage() {
  try {
    localStorage.setItem("cs_probe", "1");
    localStorage.removeItem("cs_probe");
    return {
      get: (k) => localStorage.getItem(k),
      set: (k, v) => localStorage.setItem(k, v),
      del: (k) => localStorage.removeItem(k),
    };
  } catch {
    // Storage blocked: a first-party cookie for a year, else memory only.
    const memory = new Map();
    return {
      get(k) {
        const m = document.cookie.match(new RegExp(`(?:^|; )${k}=([^;]*)`));
        return m ? decodeURIComponent(m[1]) : memory.get(k) ?? null;
      },
      set(k, v) {
        memory.set(k, v);
        document.cookie = `${k}=${encodeURIComponent(v)}; max-age=31536000; path=/; SameSite=Lax`;
      },
      del(k) {
        memory.delete(k);
        document.cookie = `${k}=; max-age=0; path=/`;
      },
    };
  }
}

function campaignFrom(url) {
  const params = new URL(url).searchParams;
  const fields = { source: "utm_source", medium: "utm_medium", name: "utm_campaign",
                   term: "utm_term", content: "utm_content" };
  const campaign = {};
  for (const [field, param] of Object.entries(fields)) {
    const value = params.get(param);
    if (value) campaign[field] = value;
  }
  return Object.keys(campaign).length ? campaign : undefined;
}

function sizeOf(text) {
  return new TextEncoder().encode(text).length;
}

export function createTracker(options) {
  const {
    writeKey,
    endpoint = "",
    autoPageView = true,
    batchSize = 20,
    flushInterval = 2000,
    maxQueue = 1000,
    maxRetries = 8,
    app,
  } = options || {};
  if (!writeKey) throw new Error("clickstream: `writeKey` is required");
  const base = endpoint.replace(/\/$/, "");
  const store = storage();
  const queue = [];
  let timer = null;
  let sending = false;
  let retries = 0;
  const stats = { queued: 0, sent: 0, rejected: 0, dropped: 0, failed: 0 };

  let anonymousId = store.get("cs_aid");
  if (!anonymousId) {
    anonymousId = uuid();
    store.set("cs_aid", anonymousId);
  }
  let userId = store.get("cs_uid");

  function sessionId() {
    const now = Date.now();
    let session = null;
    try {
      session = JSON.parse(store.get("cs_session") || "null");
    } catch {}
    if (!session || now - session.last > SESSION_TIMEOUT_MS) session = { id: uuid(), last: now };
    session.last = now;
    store.set("cs_session", JSON.stringify(session));
    return session.id;
  }

  function schedule(delay) {
    if (timer === null) timer = setTimeout(() => { timer = null; flush(); }, delay);
  }

  function track(eventType, fields = {}) {
    const context = { user_agent: navigator.userAgent, locale: navigator.language };
    const campaign = campaignFrom(location.href);
    if (campaign) context.campaign = campaign;
    if (app) context.app = app;
    const event = {
      event_id: uuid(),
      event_type: eventType,
      occurred_at: new Date().toISOString(),
      anonymous_id: anonymousId,
      session_id: sessionId(),
      page: { url: location.href, title: document.title || undefined,
              referrer: document.referrer || undefined },
      context,
      ...fields,
    };
    if (userId) event.user_id = userId;
    if (queue.length >= maxQueue) {
      // Same policy as the Python SDK: a full queue drops the new event, counted and warned.
      stats.dropped += 1;
      console.warn(`clickstream: queue full (${maxQueue}), event dropped`);
      return null;
    }
    queue.push(JSON.stringify(event));
    stats.queued += 1;
    if (queue.length >= batchSize) flush();
    else schedule(flushInterval);
    return event.event_id;
  }

  // Take events from the front of the queue while the body stays under the keepalive cap.
  function takeBatch() {
    const batch = [];
    let size = 12;
    while (queue.length && batch.length < batchSize) {
      const next = sizeOf(queue[0]) + 1;
      if (batch.length && size + next > MAX_BODY_BYTES) break;
      batch.push(queue.shift());
      size += next;
    }
    return batch;
  }

  function body(batch) {
    return `{"events":[${batch.join(",")}]}`;
  }

  async function flush() {
    if (sending || !queue.length) return;
    sending = true;
    const batch = takeBatch();
    let delay = 0;
    try {
      const response = await fetch(`${base}/v1/batch`, {
        method: "POST",
        keepalive: true,
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${writeKey}` },
        body: body(batch),
      });
      if (response.status === 202 || response.ok) {
        const answer = await response.json().catch(() => ({ rejected: [] }));
        const rejected = answer.rejected || [];
        stats.sent += batch.length - rejected.length;
        stats.rejected += rejected.length;
        for (const r of rejected.slice(0, 5)) console.warn("clickstream: event rejected:", r.error);
        retries = 0;
      } else if (RETRYABLE.has(response.status)) {
        delay = retryDelay(response.headers.get("Retry-After"));
      } else {
        stats.failed += batch.length;
        console.error(`clickstream: HTTP ${response.status}, ${batch.length} events dropped`);
      }
    } catch (error) {
      delay = retryDelay(null); // network error: the same events (same ids) go again later
    }
    if (delay) {
      if (retries > maxRetries) {
        stats.failed += batch.length;
        retries = 0;
        console.error(`clickstream: gave up on ${batch.length} events`);
      } else {
        queue.unshift(...batch);
      }
    }
    sending = false;
    if (queue.length) schedule(delay || (queue.length >= batchSize ? 0 : flushInterval));
  }

  // Full-jitter exponential backoff, never sooner than Retry-After.
  function retryDelay(retryAfter) {
    const jitter = Math.random() * Math.min(30000, 500 * 2 ** retries);
    retries += 1;
    const floor = retryAfter && !isNaN(retryAfter) ? Number(retryAfter) * 1000 : 0;
    return Math.max(floor, jitter, 1);
  }

  // The page is going away: hand everything queued to the browser, which sends it even after
  // the page is gone. Beacons cannot set headers: the write key travels in the query string.
  function drain() {
    const url = `${base}/v1/batch?writeKey=${encodeURIComponent(writeKey)}`;
    while (queue.length) {
      const batch = takeBatch();
      const text = body(batch);
      const ok = navigator.sendBeacon && navigator.sendBeacon(url, text);
      if (!ok) {
        fetch(url, { method: "POST", keepalive: true, body: text,
                     headers: { "Content-Type": "text/plain" } }).catch(() => {});
      }
      stats.sent += batch.length;
    }
  }

  addEventListener("pagehide", drain);
  addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") drain();
  });

  const tracker = {
    version: VERSION,
    stats,
    get anonymousId() { return anonymousId; },
    track: (eventType, properties) => track(eventType, properties ? { properties } : {}),
    pageView: (properties) => track("page_view", properties ? { properties } : {}),
    productView: (product) => track("product_view", { product }),
    search: (query, results) =>
      track("search", { properties: results === undefined ? { query } : { query, results } }),
    addToCart: (product) => track("add_to_cart", { product }),
    removeFromCart: (product) => track("remove_from_cart", { product }),
    beginCheckout: (items, currency) => {
      const value = items.reduce((sum, i) => sum + (i.price || 0) * (i.quantity || 1), 0);
      const count = items.reduce((sum, i) => sum + (i.quantity || 1), 0);
      const properties = { value: Math.round(value * 100) / 100, item_count: count };
      if (currency) properties.currency = currency;
      return track("begin_checkout", { properties });
    },
    // order: { order_id, currency, items: [products] }; revenue defaults to the items' sum.
    purchase: (order) => {
      const items = order.items || [];
      const sum = items.reduce((s, i) => s + (i.price || 0) * (i.quantity || 1), 0);
      return track("purchase", {
        order: { revenue: Math.round(sum * 100) / 100, ...order, items },
      });
    },
    // After sign-in: an `identify` event carrying both ids links this visitor's anonymous
    // history to the user (the platform merges the profiles); later events carry the user id.
    identify(id, traits) {
      if (!id) throw new Error("clickstream: identify needs a user id");
      userId = String(id);
      store.set("cs_uid", userId);
      return track("identify", traits ? { properties: traits } : {});
    },
    reset() {
      userId = null;
      store.del("cs_uid");
      store.del("cs_session");
      anonymousId = uuid();
      store.set("cs_aid", anonymousId);
    },
    flush,
  };
  if (autoPageView) tracker.pageView();
  return tracker;
}

// One tracker per page: `init` returns the same one when called again.
let current = null;
export function init(options) {
  if (!current) current = createTracker(options);
  return current;
}
