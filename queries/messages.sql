-- name: create_message
-- Store a message and its recipient rows in one statement: all or nothing.
-- A reply without a conversation joins its parent's conversation. Each recipient's
-- inbox lock (one of 128, taken in order) is held from before the clock until commit,
-- so an inbox's rows commit in sent_at order and a stream resuming after a cursor
-- misses none; the recipients are notified to the listening replicas at commit (one
-- notification per 200, notify_recipients()), and a recipient with a webhook gets a
-- delivery row (webhooks/dispatcher.py sends it).
WITH wanted AS (
    SELECT DISTINCT unnest(%(recipient_ids)s::uuid[]) AS recipient_id
), locked AS (
    SELECT count(pg_advisory_xact_lock(1835100524, bucket)) AS locks
      FROM (SELECT DISTINCT abs(hashtext(recipient_id::text) %% 128) AS bucket
              FROM wanted ORDER BY bucket) AS buckets
), clock AS (
    SELECT clock_timestamp() AS now FROM locked
), message AS (
    INSERT INTO messages (sender_id, parent_message_id, conversation_id, content,
                          message_type, importance, status, msg_metadata, sent_at, updated_at)
    SELECT %(sender_id)s, %(parent_message_id)s,
           COALESCE(%(conversation_id)s::uuid,
                    (SELECT conversation_id FROM messages WHERE id = %(parent_message_id)s::uuid)),
           %(content)s, %(message_type)s, %(importance)s, %(status)s, %(msg_metadata)s,
           clock.now, clock.now
      FROM clock
    RETURNING id, sender_id, sent_at, parent_message_id, conversation_id, content,
              message_type, importance, status, msg_metadata, updated_at
), recipients AS (
    INSERT INTO message_recipients (message_id, recipient_id, sent_at)
    SELECT message.id, recipient_id, message.sent_at
      FROM message, wanted
    RETURNING recipient_id
), notified AS (
    SELECT notify_recipients(message.id, message.sent_at,
                             (SELECT array_agg(recipient_id) FROM recipients))
      FROM message
), deliveries AS (
    -- The outbox: one delivery per recipient with a working webhook, written with the
    -- message; the notification wakes every replica's dispatchers at commit.
    INSERT INTO webhook_deliveries (agent_id, message_id, created_at, next_attempt_at)
    SELECT agent.id, message.id, message.sent_at, message.sent_at
      FROM message, wanted
      JOIN agents agent ON agent.id = wanted.recipient_id
     WHERE agent.webhook_url IS NOT NULL AND agent.webhook_disabled_at IS NULL
       AND agent.retired_at IS NULL
    RETURNING pg_notify(webhook_channel(), '')
)
SELECT id, sender_id, rfc3339(sent_at) AS sent_at, parent_message_id, conversation_id,
       content, message_type, importance, status, msg_metadata,
       rfc3339(updated_at) AS updated_at
  FROM message, notified;  -- notified: a SELECT in WITH runs only when it is read

-- name: get_message
-- One message by id; no row means 404.
SELECT id, sender_id, rfc3339(sent_at) AS sent_at, parent_message_id, conversation_id,
       content, message_type, importance, status, msg_metadata,
       rfc3339(updated_at) AS updated_at
  FROM messages
 WHERE id = %(message_id)s;

-- name: update_message
-- Change the fields whose set_ flag is true; no row means 404.
UPDATE messages
   SET content           = CASE WHEN %(set_content)s THEN %(content)s ELSE content END,
       parent_message_id = CASE WHEN %(set_parent_message_id)s
                                THEN %(parent_message_id)s::uuid ELSE parent_message_id END,
       conversation_id   = CASE WHEN %(set_conversation_id)s
                                THEN %(conversation_id)s::uuid ELSE conversation_id END,
       message_type      = CASE WHEN %(set_message_type)s
                                THEN %(message_type)s ELSE message_type END,
       importance        = CASE WHEN %(set_importance)s
                                THEN %(importance)s::smallint ELSE importance END,
       status            = CASE WHEN %(set_status)s THEN %(status)s ELSE status END,
       msg_metadata      = CASE WHEN %(set_msg_metadata)s
                                THEN %(msg_metadata)s::json ELSE msg_metadata END,
       updated_at        = clock_timestamp()
 WHERE id = %(message_id)s
RETURNING id, sender_id, rfc3339(sent_at) AS sent_at, parent_message_id, conversation_id,
          content, message_type, importance, status, msg_metadata,
          rfc3339(updated_at) AS updated_at;
