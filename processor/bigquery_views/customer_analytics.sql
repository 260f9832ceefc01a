SELECT
  visitor_key,
  MAX(user_id) AS user_id,
  MIN(first_seen_at) AS first_seen_at,
  MAX(last_seen_at) AS last_seen_at,
  SUM(events) AS events,
  (SELECT COUNT(DISTINCT session_id) FROM UNNEST(ARRAY_CONCAT_AGG(session_ids)) AS session_id)
    AS sessions,
  (SELECT COUNT(DISTINCT order_id) FROM UNNEST(ARRAY_CONCAT_AGG(order_ids)) AS order_id)
    AS orders,
  -- In the reporting currency; orders without a rate in it are counted apart, not summed.
  SUM(revenue) AS lifetime_value,
  MAX(reporting_currency) AS reporting_currency,
  (SELECT COUNT(DISTINCT order_id) FROM UNNEST(ARRAY_CONCAT_AGG(unconverted_order_ids)) AS order_id)
    AS unconverted_orders,
  MAX(last_order_at) AS last_order_at
FROM `${project}.${dataset}.customer_daily`
GROUP BY visitor_key
