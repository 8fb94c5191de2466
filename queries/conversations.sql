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

-- name: list_conversation_messages
-- Every message of a conversation, oldest first.
SELECT id, sender_id, sent_at, parent_message_id, conversation_id, content,
       message_type, importance, status, msg_metadata, updated_at
  FROM messages
 WHERE conversation_id = %(conversation_id)s
 ORDER BY sent_at, id;

-- name: list_recipients_of_messages
-- The recipient rows of the given messages (a conversation's, for its details).
SELECT message_id, recipient_id, is_read, read_at
  FROM message_recipients
 WHERE message_id = ANY(%(message_ids)s)
 ORDER BY message_id, recipient_id;

-- name: list_metadata_of_messages
-- The metadata items of the given messages, oldest first.
SELECT id, message_id, key, value, agent_id, created_at
  FROM agent_message_metadata
 WHERE message_id = ANY(%(message_ids)s)
 ORDER BY created_at, id;

-- name: list_agents
-- The given agents, oldest first (the agents of a conversation, for its details).
SELECT id, agent_name, ip_address, port, created_at, updated_at
  FROM agents
 WHERE id = ANY(%(agent_ids)s)
 ORDER BY created_at, id;
