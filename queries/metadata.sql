-- name: lock_message_metadata
-- Take the lock on a message's metadata, held to the end of the transaction: the caps
-- below are counted after it, in a statement of their own (a fresh snapshot), so two
-- writers at the same moment cannot both take the last place.
SELECT pg_advisory_xact_lock(1835100525, hashtext(%(message_id)s::text));

-- name: lock_metadata_item
-- The same lock, for the message a metadata item belongs to; 0 means no such item.
SELECT count(pg_advisory_xact_lock(1835100525, hashtext(message_id::text))) AS locked
  FROM agent_message_metadata
 WHERE id = %(metadata_id)s;

-- name: create_metadata
-- Attach a key-value pair to a message, unless the message already holds max_items
-- items or the pair would take its keys and values past max_bytes; no row means full.
INSERT INTO agent_message_metadata (message_id, key, value, agent_id)
SELECT %(message_id)s::uuid, %(key)s::text, %(value)s::text, %(agent_id)s::uuid
 WHERE (SELECT count(*) < %(max_items)s
               AND coalesce(sum(metadata_bytes(key, value)), 0)
                   + metadata_bytes(%(key)s::text, %(value)s::text) <= %(max_bytes)s
          FROM agent_message_metadata
         WHERE message_id = %(message_id)s)
RETURNING id, message_id, key, value, agent_id, rfc3339(created_at) AS created_at;

-- name: update_metadata
-- Change the key and/or value of a metadata item, unless that takes its message's keys
-- and values past max_bytes; no row means full (lock_metadata_item found the item).
WITH changed AS (
    SELECT d.id, d.message_id,
           CASE WHEN %(set_key)s THEN %(key)s ELSE d.key END AS key,
           CASE WHEN %(set_value)s THEN %(value)s ELSE d.value END AS value
      FROM agent_message_metadata d
     WHERE d.id = %(metadata_id)s
)
UPDATE agent_message_metadata d
   SET key = c.key, value = c.value
  FROM changed c
 WHERE d.id = c.id
   AND (SELECT coalesce(sum(metadata_bytes(o.key, o.value)), 0)
          FROM agent_message_metadata o
         WHERE o.message_id = c.message_id AND o.id <> c.id)
       + metadata_bytes(c.key, c.value) <= %(max_bytes)s
RETURNING d.id, d.message_id, d.key, d.value, d.agent_id, rfc3339(d.created_at) AS created_at;

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
