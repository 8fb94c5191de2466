-- name: create_conversation
-- Start a conversation; created_by is the agent that started it (NULL for the admin).
INSERT INTO conversations
       (title, description, archived, metadata, created_by, created_at, updated_at)
SELECT %(title)s, %(description)s, %(archived)s, %(metadata)s, %(created_by)s, now, now
  FROM (SELECT clock_timestamp() AS now) AS clock
RETURNING id, title, description, archived, metadata, created_at, updated_at;

-- name: get_conversation
-- One conversation by id; no row means 404.
SELECT id, title, description, archived, metadata, created_at, updated_at
  FROM conversations
 WHERE id = %(conversation_id)s;

-- name: update_conversation
-- Change the fields whose set_ flag is true; no row means 404.
UPDATE conversations
   SET title       = CASE WHEN %(set_title)s THEN %(title)s ELSE title END,
       description = CASE WHEN %(set_description)s THEN %(description)s ELSE description END,
       archived    = CASE WHEN %(set_archived)s THEN %(archived)s::boolean ELSE archived END,
       metadata    = CASE WHEN %(set_metadata)s THEN %(metadata)s::json ELSE metadata END,
       updated_at  = clock_timestamp()
 WHERE id = %(conversation_id)s
RETURNING id, title, description, archived, metadata, created_at, updated_at;

-- name: list_conversations
-- A page of conversations, newest first, after a sort key, optionally by archived state.
SELECT id, title, description, archived, metadata, created_at, updated_at
  FROM conversations
 WHERE (%(archived)s::boolean IS NULL OR archived = %(archived)s::boolean)
   AND (created_at, id) < (%(after_created_at)s, %(after_id)s)
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s;

-- name: list_conversations_of_agent
-- Like list_conversations, only those an agent started or sent or received a message in.
SELECT c.id, c.title, c.description, c.archived, c.metadata, c.created_at, c.updated_at
  FROM conversations c
 WHERE (%(archived)s::boolean IS NULL OR c.archived = %(archived)s::boolean)
   AND (c.created_at, c.id) < (%(after_created_at)s, %(after_id)s)
   AND (c.created_by = %(agent_id)s
        OR EXISTS (SELECT 1
                     FROM messages m
                    WHERE m.conversation_id = c.id
                      AND (m.sender_id = %(agent_id)s
                           OR EXISTS (SELECT 1
                                        FROM message_recipients r
                                       WHERE r.message_id = m.id
                                         AND r.recipient_id = %(agent_id)s))))
 ORDER BY c.created_at DESC, c.id DESC
 LIMIT %(limit)s;

-- name: get_conversation_messages_json
-- A conversation's messages, oldest first, each with its recipients and metadata, as one
-- JSON array built here (timestamps spelled as everywhere: UTC, six fractional digits,
-- Z), the ids of the agents involved, and the counts of the details document. With an
-- agent_id, only the messages that agent sent or received.
WITH m AS (
    SELECT id, sender_id, sent_at, parent_message_id, conversation_id, content,
           message_type, importance, status, msg_metadata, updated_at
      FROM messages
     WHERE conversation_id = %(conversation_id)s
       AND (%(agent_id)s::uuid IS NULL
            OR sender_id = %(agent_id)s::uuid
            OR EXISTS (SELECT 1
                         FROM message_recipients x
                        WHERE x.message_id = messages.id
                          AND x.recipient_id = %(agent_id)s::uuid))
), r AS (
    SELECT message_id,
           json_agg(json_build_object(
                      'recipient_id', recipient_id,
                      'is_read', is_read,
                      'read_at', to_char(read_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                    ORDER BY recipient_id) AS recipients,
           count(*) FILTER (WHERE NOT is_read) AS unread,
           array_agg(recipient_id) AS agent_ids
      FROM message_recipients
     WHERE message_id = ANY (ARRAY(SELECT id FROM m))
     GROUP BY message_id
), md AS (
    SELECT message_id,
           json_agg(json_build_object(
                      'id', id, 'message_id', message_id, 'key', key, 'value', value,
                      'agent_id', agent_id,
                      'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                    ORDER BY created_at, id) AS items
      FROM agent_message_metadata
     WHERE message_id = ANY (ARRAY(SELECT id FROM m))
     GROUP BY message_id
)
SELECT coalesce(json_agg(json_build_object(
           'id', m.id,
           'sender_id', m.sender_id,
           'sent_at', to_char(m.sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'parent_message_id', m.parent_message_id,
           'conversation_id', m.conversation_id,
           'content', m.content,
           'message_type', m.message_type,
           'importance', m.importance,
           'status', m.status,
           'msg_metadata', m.msg_metadata,
           'updated_at', to_char(m.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'recipients', coalesce(r.recipients, '[]'::json),
           'metadata_items', coalesce(md.items, '[]'::json))
         ORDER BY m.sent_at, m.id), '[]'::json)::text AS messages,
       ARRAY(SELECT sender_id FROM m WHERE sender_id IS NOT NULL
             UNION SELECT unnest(agent_ids) FROM r) AS agent_ids,
       count(m.id)::integer AS total_messages,
       coalesce(sum(r.unread), 0)::integer AS unread_count
  FROM m
  LEFT JOIN r ON r.message_id = m.id
  LEFT JOIN md ON md.message_id = m.id;

-- name: list_agents
-- The given agents, oldest first (the agents of a conversation, for its details). With a
-- viewer (an agent's key), only the viewer's own address and port are shown.
SELECT id, agent_name,
       CASE WHEN %(viewer)s::uuid IS NULL OR id = %(viewer)s::uuid THEN ip_address END AS ip_address,
       CASE WHEN %(viewer)s::uuid IS NULL OR id = %(viewer)s::uuid THEN port END AS port,
       created_at, updated_at
  FROM agents
 WHERE id = ANY(%(agent_ids)s)
 ORDER BY created_at, id;
