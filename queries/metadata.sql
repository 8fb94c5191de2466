-- name: create_metadata
-- Attach a key-value pair to a message.
INSERT INTO agent_message_metadata (message_id, key, value, agent_id)
VALUES (%(message_id)s, %(key)s, %(value)s, %(agent_id)s)
RETURNING id, message_id, key, value, agent_id, rfc3339(created_at) AS created_at;

-- name: update_metadata
-- Change the key and/or value of a metadata item; no row means 404.
UPDATE agent_message_metadata
   SET key   = CASE WHEN %(set_key)s THEN %(key)s ELSE key END,
       value = CASE WHEN %(set_value)s THEN %(value)s ELSE value END
 WHERE id = %(metadata_id)s
RETURNING id, message_id, key, value, agent_id, rfc3339(created_at) AS created_at;

-- name: get_message_access
-- Whether the message and the agent exist, and whether the agent sent or received it.
SELECT EXISTS (SELECT 1 FROM messages WHERE id = %(message_id)s) AS message_exists,
       EXISTS (SELECT 1 FROM agents WHERE id = %(agent_id)s) AS agent_exists,
       EXISTS (SELECT 1 FROM message_parties
                WHERE message_id = %(message_id)s AND agent_id = %(agent_id)s) AS has_access;

-- name: list_message_metadata
-- A message's metadata items, oldest first.
SELECT d.id, d.message_id, d.key, d.value, d.agent_id, rfc3339(d.created_at) AS created_at
  FROM agent_message_metadata d
 WHERE d.message_id = %(message_id)s
 ORDER BY d.created_at, d.id;
