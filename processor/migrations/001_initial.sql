-- Initial schema: raw recent events, live aggregates, sessions, customer profiles, bad events.
--
-- Exactly-once in effect: `events` is keyed by event_id and every aggregate below is updated
-- only from the rows that INSERT ... ON CONFLICT (event_id) DO NOTHING actually inserted, in
-- the same transaction. A redelivered message therefore changes nothing.
--
-- A "visitor" is user_id when known, else anonymous_id (see processor: visitor_key).

CREATE TABLE events (
    event_id        uuid PRIMARY KEY,
    event_type      text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    source          text        NOT NULL,
    visitor_key     text        NOT NULL,
    anonymous_id    text,
    user_id         text,
    session_id      text        NOT NULL,
    page_url        text,
    page_path       text,
    page_title      text,
    referrer        text,
    referrer_class  text        NOT NULL,   -- search, social, direct, internal, email, paid, other
    utm_source      text,
    utm_medium      text,
    utm_campaign    text,
    utm_term        text,
    utm_content     text,
    user_agent      text,
    device_type     text        NOT NULL,   -- desktop, mobile, tablet, bot, other
    browser         text,
    os              text,
    is_bot          boolean     NOT NULL DEFAULT false,
    client_ip       text,
    locale          text,
    product_id      text,
    product_name    text,
    category        text,
    price           numeric(14, 2),
    quantity        integer,
    currency        text,
    order_id        text,
    revenue         numeric(14, 2),
    order_items     jsonb,
    properties      jsonb
);
CREATE INDEX events_occurred_at_idx ON events (occurred_at);
CREATE INDEX events_received_at_idx ON events (received_at);
CREATE INDEX events_visitor_idx ON events (visitor_key, occurred_at DESC);
CREATE INDEX events_user_idx ON events (user_id, occurred_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX events_anonymous_idx ON events (anonymous_id, occurred_at DESC)
    WHERE anonymous_id IS NOT NULL;

-- Per-minute counts by event type. `revenue` sums order revenue of purchase events.
CREATE TABLE metrics_minute (
    minute      timestamptz NOT NULL,
    event_type  text        NOT NULL,
    events      bigint      NOT NULL DEFAULT 0,
    revenue     numeric(16, 2) NOT NULL DEFAULT 0,
    unique_visitors bigint  NOT NULL DEFAULT 0,  -- distinct visitors in that minute and type
    PRIMARY KEY (minute, event_type)
);

-- Which visitors were active in which minute and event type: the dedup behind
-- metrics_minute.unique_visitors, and the source of distinct counts over a range.
CREATE TABLE visitor_minutes (
    minute      timestamptz NOT NULL,
    event_type  text        NOT NULL,
    visitor_key text        NOT NULL,
    PRIMARY KEY (minute, event_type, visitor_key)
);

-- Distinct visitors per hour and per day, for range KPIs without scanning minutes.
CREATE TABLE visitor_hours (
    hour        timestamptz NOT NULL,
    visitor_key text        NOT NULL,
    PRIMARY KEY (hour, visitor_key)
);
CREATE TABLE visitor_days (
    day         date        NOT NULL,
    visitor_key text        NOT NULL,
    PRIMARY KEY (day, visitor_key)
);

-- Per product and hour: views, carts, removals, purchases (units) and revenue.
CREATE TABLE product_metrics_hour (
    hour         timestamptz NOT NULL,
    product_id   text        NOT NULL,
    product_name text,
    category     text,
    views        bigint      NOT NULL DEFAULT 0,
    carts        bigint      NOT NULL DEFAULT 0,
    removals     bigint      NOT NULL DEFAULT 0,
    units        bigint      NOT NULL DEFAULT 0,
    revenue      numeric(16, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, product_id)
);

-- Funnel: the first time in each session that a step was reached.
-- step: product_view, add_to_cart, begin_checkout, purchase.
CREATE TABLE funnel_steps (
    session_id  text        NOT NULL,
    step        text        NOT NULL,
    reached_at  timestamptz NOT NULL,
    PRIMARY KEY (session_id, step)
);
CREATE INDEX funnel_steps_reached_idx ON funnel_steps (reached_at, step);

-- Per hour, traffic by source: count of sessions started, by utm and referrer class.
CREATE TABLE traffic_hour (
    hour            timestamptz NOT NULL,
    referrer_class  text        NOT NULL,
    utm_source      text        NOT NULL DEFAULT '',
    utm_medium      text        NOT NULL DEFAULT '',
    sessions        bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, referrer_class, utm_source, utm_medium)
);

-- Per hour, sessions by device type, browser and OS.
CREATE TABLE devices_hour (
    hour         timestamptz NOT NULL,
    device_type  text        NOT NULL,
    browser      text        NOT NULL DEFAULT '',
    os           text        NOT NULL DEFAULT '',
    sessions     bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, device_type, browser, os)
);

CREATE TABLE sessions (
    session_id      text PRIMARY KEY,
    visitor_key     text        NOT NULL,
    anonymous_id    text,
    user_id         text,
    started_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    events          bigint      NOT NULL DEFAULT 0,
    page_views      bigint      NOT NULL DEFAULT 0,
    landing_url     text,
    referrer_class  text,
    utm_source      text,
    utm_medium      text,
    utm_campaign    text,
    device_type     text,
    browser         text,
    os              text,
    purchased       boolean     NOT NULL DEFAULT false,
    revenue         numeric(16, 2) NOT NULL DEFAULT 0
);
CREATE INDEX sessions_last_seen_idx ON sessions (last_seen_at);
CREATE INDEX sessions_started_idx ON sessions (started_at);
CREATE INDEX sessions_visitor_idx ON sessions (visitor_key, last_seen_at DESC);

-- Where the processor's sessionizer keeps its state, so sessions survive a restart:
-- the open session of each anonymous id and when it was last active.
CREATE TABLE session_state (
    anonymous_id  text PRIMARY KEY,
    session_id    text        NOT NULL,
    last_seen_at  timestamptz NOT NULL
);

CREATE TABLE customers (
    visitor_key       text PRIMARY KEY,
    user_id           text,
    anonymous_ids     text[]      NOT NULL DEFAULT '{}',
    first_seen_at     timestamptz NOT NULL,
    last_seen_at      timestamptz NOT NULL,
    events            bigint      NOT NULL DEFAULT 0,
    sessions          bigint      NOT NULL DEFAULT 0,
    orders            bigint      NOT NULL DEFAULT 0,
    lifetime_value    numeric(16, 2) NOT NULL DEFAULT 0,
    last_order_id     text,
    last_order_at     timestamptz,
    first_source      text,      -- utm_source or referrer class of the first session
    device_type       text
);
CREATE INDEX customers_user_idx ON customers (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX customers_last_seen_idx ON customers (last_seen_at DESC);
CREATE INDEX customers_ltv_idx ON customers (lifetime_value DESC);
-- Prefix search by id (LIKE 'abc%') in the dashboard's customer lookup.
CREATE INDEX customers_visitor_pattern_idx ON customers (visitor_key text_pattern_ops);

CREATE TABLE bad_events (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    source       text,
    reason       text        NOT NULL,
    -- Short machine-friendly class of the reason for grouping (e.g. "validation", "envelope").
    reason_class text        NOT NULL,
    raw          bytea       NOT NULL,
    client_ip    text,
    user_agent   text,
    -- Dedup of redelivered bad-event messages: Pub/Sub message id and position within it.
    message_key  text UNIQUE
);
CREATE INDEX bad_events_received_idx ON bad_events (received_at);
CREATE INDEX bad_events_reason_idx ON bad_events (reason_class, received_at);
