-- customer_daily's refresh: recompute every (day, visitor_key) row of the last ${days} whole days
-- before @run_time's date and every later day, from events deduplicated by event_id. Terraform
-- schedules it (BigQuery sets @run_time); tests and the local emulator put the time in as a
-- literal (processor.bigquery_schema.refresh_customer_daily).
-- The partition filter is on `events` itself, not on the events_dedup view: BigQuery cannot
-- push a filter on occurred_at through ROW_NUMBER() OVER (PARTITION BY event_id), so the view
-- would scan every partition. Filtering first is exact, as all copies of an event carry the
-- same occurred_at. Recomputing whole days makes a run idempotent and picks up late events.
-- Revenue is the processor's conversion into the reporting currency (revenue_reporting, set by
-- processor/currency.py); a purchase without one in ${reporting_currency} (no rate, or an
-- event from before the conversion or converted for another setting) is kept apart by its
-- order id and never summed as sent.
MERGE `${project}.${dataset}.customer_daily` AS daily
USING (
  SELECT
    DATE(occurred_at) AS day,
    visitor_key,
    MAX(user_id) AS user_id,
    MIN(occurred_at) AS first_seen_at,
    MAX(occurred_at) AS last_seen_at,
    COUNT(*) AS events,
    ARRAY_AGG(DISTINCT session_id) AS session_ids,
    ARRAY_AGG(IF(event_type = 'purchase', order_id, NULL) IGNORE NULLS) AS order_ids,
    COALESCE(SUM(IF(converted, revenue_reporting, NULL)), 0) AS revenue,
    '${reporting_currency}' AS reporting_currency,
    ARRAY_AGG(IF(event_type = 'purchase' AND NOT converted, order_id, NULL) IGNORE NULLS)
      AS unconverted_order_ids,
    MAX(IF(event_type = 'purchase', occurred_at, NULL)) AS last_order_at
  FROM (
    SELECT
      *,
      event_type = 'purchase' AND revenue_reporting IS NOT NULL
        AND reporting_currency = '${reporting_currency}' AS converted
    FROM `${project}.${dataset}.events`
    WHERE occurred_at >= TIMESTAMP(DATE_SUB(DATE(@run_time), INTERVAL ${days} DAY))
    QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY received_at) = 1
  )
  GROUP BY day, visitor_key
) AS recent
-- The day filter on the target in ON and in NOT MATCHED BY SOURCE prunes its old partitions
-- and keeps their rows: only the recomputed days are replaced.
ON daily.day = recent.day
  AND daily.visitor_key = recent.visitor_key
  AND daily.day >= DATE_SUB(DATE(@run_time), INTERVAL ${days} DAY)
WHEN MATCHED THEN UPDATE SET
  user_id = recent.user_id,
  first_seen_at = recent.first_seen_at,
  last_seen_at = recent.last_seen_at,
  events = recent.events,
  session_ids = recent.session_ids,
  order_ids = recent.order_ids,
  revenue = recent.revenue,
  reporting_currency = recent.reporting_currency,
  unconverted_order_ids = recent.unconverted_order_ids,
  last_order_at = recent.last_order_at
WHEN NOT MATCHED BY TARGET THEN INSERT (
    day, visitor_key, user_id, first_seen_at, last_seen_at, events, session_ids, order_ids,
    revenue, reporting_currency, unconverted_order_ids, last_order_at
  ) VALUES (
    recent.day, recent.visitor_key, recent.user_id, recent.first_seen_at, recent.last_seen_at,
    recent.events, recent.session_ids, recent.order_ids, recent.revenue,
    recent.reporting_currency, recent.unconverted_order_ids, recent.last_order_at
  )
WHEN NOT MATCHED BY SOURCE AND daily.day >= DATE_SUB(DATE(@run_time), INTERVAL ${days} DAY)
  THEN DELETE
