-- name: configure_session
-- Every pooled connection reads and writes timestamps in UTC, ISO format.
SET TIME ZONE 'UTC'; SET DateStyle TO ISO;

-- name: ping
-- The cheapest statement that proves the database answers.
SELECT 1;
