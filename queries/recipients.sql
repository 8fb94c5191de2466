-- name: create_recipient
-- Add a recipient to an existing message; no row means the message does not exist.
-- An unread row notifies the listening replicas at commit and, for a recipient with a
-- webhook, gets a delivery row in the same statement (see create_message).
WITH recipient AS (
    INSERT INTO message_recipients (message_id, recipient_id, is_read, read_at, sent_at)
    SELECT id, %(recipient_id)s, %(is_read)s,
           CASE WHEN %(is_read)s THEN clock_timestamp() END, sent_at
      FROM messages
     WHERE id = %(message_id)s
    RETURNING message_id, recipient_id, is_read, read_at, sent_at
), delivery AS (
    INSERT INTO webhook_deliveries (agent_id, message_id)
    SELECT agent.id, recipient.message_id
      FROM recipient
      JOIN agents agent ON agent.id = recipient.recipient_id
     WHERE NOT recipient.is_read
       AND agent.webhook_url IS NOT NULL AND agent.webhook_disabled_at IS NULL
       AND agent.retired_at IS NULL
    RETURNING pg_notify(webhook_channel(), '')
)
SELECT message_id, recipient_id, is_read, rfc3339(read_at) AS read_at
  FROM recipient
 WHERE is_read OR notify_recipients(message_id, sent_at, ARRAY[recipient_id]) IS NOT NULL;

-- name: update_recipient
-- Set read state; read_at is stamped when it becomes read and cleared when unread.
UPDATE message_recipients
   SET is_read = %(is_read)s,
       read_at = CASE WHEN NOT %(is_read)s THEN NULL
                      WHEN is_read THEN read_at
                      ELSE clock_timestamp() END
 WHERE message_id = %(message_id)s AND recipient_id = %(recipient_id)s
RETURNING message_id, recipient_id, is_read, rfc3339(read_at) AS read_at;
