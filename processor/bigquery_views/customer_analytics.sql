SELECT
  visitor_key,
  MAX(user_id) AS user_id,
  MIN(occurred_at) AS first_seen_at,
  MAX(occurred_at) AS last_seen_at,
  COUNT(*) AS events,
  COUNT(DISTINCT session_id) AS sessions,
  COUNT(DISTINCT IF(event_type = 'purchase', order_id, NULL)) AS orders,
  COALESCE(SUM(IF(event_type = 'purchase', revenue, NULL)), 0) AS lifetime_value,
  MAX(IF(event_type = 'purchase', occurred_at, NULL)) AS last_order_at
FROM `${project}.${dataset}.events_dedup`
GROUP BY visitor_key
