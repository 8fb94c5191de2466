-- name: create_recipient
-- Add a recipient to an existing message; no row means the message does not exist.
-- An unread row notifies the listening replicas at commit (see create_message).
WITH recipient AS (
    INSERT INTO message_recipients (message_id, recipient_id, is_read, read_at, sent_at)
    SELECT id, %(recipient_id)s, %(is_read)s,
           CASE WHEN %(is_read)s THEN clock_timestamp() END, sent_at
      FROM messages
     WHERE id = %(message_id)s
    RETURNING message_id, recipient_id, is_read, read_at, sent_at
)
SELECT message_id, recipient_id, is_read, rfc3339(read_at) AS read_at
  FROM recipient
 WHERE is_read OR notify_inbox(recipient_id, sent_at, message_id) IS NOT NULL;

-- name: update_recipient
-- Set read state; read_at is stamped when it becomes read and cleared when unread.
UPDATE message_recipients
   SET is_read = %(is_read)s,
       read_at = CASE WHEN NOT %(is_read)s THEN NULL
                      WHEN is_read THEN read_at
                      ELSE clock_timestamp() END
 WHERE message_id = %(message_id)s AND recipient_id = %(recipient_id)s
RETURNING message_id, recipient_id, is_read, rfc3339(read_at) AS read_at;
