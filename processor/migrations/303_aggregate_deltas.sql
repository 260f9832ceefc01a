-- Aggregate deltas (issue 15): a batch no longer upserts the aggregates itself. In its
-- transaction it stores its event ids (the exactly-once key) and appends what it adds to each
-- aggregate here, rows that no other batch ever touches: concurrent batches (several workers,
-- many function instances with two connections each) no longer wait for each other's row locks
-- on the sessions, customers and visitors that consecutive messages share. One applier at a time
-- (processor.postgres.apply_pending, under an advisory lock) moves every committed delta into
-- the aggregates in one transaction, one set-based upsert per table, many batches at once.
--
-- Each table has the columns of one upsert, with the types of the aggregate they add to (so a
-- value the aggregate cannot hold is refused with its batch, not later when applied). No keys:
-- a key can have deltas from several batches; the applier folds them. No indexes: the applier
-- reads each table whole. Not UNLOGGED: a batch's deltas are acknowledged to Pub/Sub when they
-- commit, so they must survive a crash like the aggregates.

CREATE TABLE delta_visitor_hours (
    hour         timestamptz NOT NULL,
    visitor_key  text        NOT NULL
);

CREATE TABLE delta_visitor_days (
    day          date        NOT NULL,
    visitor_key  text        NOT NULL
);

CREATE TABLE delta_sessions (
    session_id      text        NOT NULL,
    visitor_key     text        NOT NULL,
    anonymous_id    text,
    user_id         text,
    started_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    events          bigint      NOT NULL,
    page_views      bigint      NOT NULL,
    landing_url     text,
    referrer_class  text,
    utm_source      text,
    utm_medium      text,
    utm_campaign    text,
    device_type     text,
    browser         text,
    os              text,
    purchased       boolean     NOT NULL,
    revenue         numeric(16, 2) NOT NULL
);

CREATE TABLE delta_customers (
    visitor_key     text        NOT NULL,
    user_id         text,
    anonymous_ids   text[]      NOT NULL,
    first_seen_at   timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    events          bigint      NOT NULL,
    orders          bigint      NOT NULL,
    lifetime_value  numeric(16, 2) NOT NULL,
    last_order_id   text,
    last_order_at   timestamptz,
    first_source    text,
    device_type     text
);

CREATE TABLE delta_funnel_steps (
    session_id  text        NOT NULL,
    step        text        NOT NULL,
    reached_at  timestamptz NOT NULL
);

CREATE TABLE delta_products (
    hour          timestamptz NOT NULL,
    product_id    text        NOT NULL,
    product_name  text,
    category      text,
    views         bigint      NOT NULL,
    carts         bigint      NOT NULL,
    removals      bigint      NOT NULL,
    units         bigint      NOT NULL,
    revenue       numeric(16, 2) NOT NULL
);

CREATE TABLE delta_unconverted (
    hour      timestamptz NOT NULL,
    currency  text        NOT NULL,
    orders    bigint      NOT NULL,
    revenue   numeric(16, 2) NOT NULL
);

CREATE TABLE delta_visitor_minutes (
    minute       timestamptz NOT NULL,
    event_type   text        NOT NULL,
    visitor_key  text        NOT NULL
);

CREATE TABLE delta_minutes (
    minute      timestamptz NOT NULL,
    event_type  text        NOT NULL,
    events      bigint      NOT NULL,
    revenue     numeric(16, 2) NOT NULL
);
