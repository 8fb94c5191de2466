-- name: configure_session
-- Every pooled connection reads and writes timestamps in UTC.
SET TIME ZONE 'UTC';

-- name: ping
-- The cheapest statement that proves the database answers.
SELECT 1;
