-- Retention (issue 15, MAILROOM_RETENTION_DAYS): the oldest messages are found, a batch
-- at a time, from this index instead of a scan of the table.
CREATE INDEX messages_sent_at ON messages (sent_at);
