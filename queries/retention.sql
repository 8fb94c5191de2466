-- name: take_retention_turn
-- Whether this replica runs the next retention batch: one replica at a time, held until
-- the batch's transaction ends (a transaction lock, so it also holds behind PgBouncer).
SELECT pg_try_advisory_xact_lock(7265636576);

-- name: delete_expired_messages
-- One batch of the oldest messages sent before the cutoff, with their recipient rows and
-- metadata; replies to them lose their parent. Rows another transaction has locked (an
-- edit in flight) are skipped and taken by a later batch. The batch's ids are one array,
-- so that every part reads its table by index (= ANY) whatever the batch size.
WITH doomed AS (
    SELECT ARRAY(
        SELECT id
          FROM messages
         WHERE sent_at < now() - make_interval(days => %(days)s)
         ORDER BY sent_at
         LIMIT %(batch)s
           FOR UPDATE SKIP LOCKED
    ) AS ids
), unlinked AS (
    UPDATE messages
       SET parent_message_id = NULL
      FROM doomed
     WHERE parent_message_id = ANY (doomed.ids)
       AND NOT id = ANY (doomed.ids)
    RETURNING id
), notes AS (
    DELETE FROM agent_message_metadata
     USING doomed
     WHERE message_id = ANY (doomed.ids)
    RETURNING id
), copies AS (
    DELETE FROM message_recipients
     USING doomed
     WHERE message_id = ANY (doomed.ids)
    RETURNING message_id
), erased AS (
    DELETE FROM messages
     USING doomed
     WHERE id = ANY (doomed.ids)
    RETURNING id
)
SELECT (SELECT count(*) FROM erased) AS messages,
       (SELECT count(*) FROM copies) AS recipients,
       (SELECT count(*) FROM notes) AS metadata,
       (SELECT count(*) FROM unlinked) AS replies_unlinked;
