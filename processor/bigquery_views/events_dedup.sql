SELECT * FROM `${project}.${dataset}.events`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY received_at) = 1
