-- name: create_conversation
-- Start a conversation.
INSERT INTO conversations (title, description, archived, metadata, created_at, updated_at)
SELECT %(title)s, %(description)s, %(archived)s, %(metadata)s, now, now
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

-- name: list_conversation_messages
-- Every message of a conversation, oldest first.
SELECT id, sender_id, sent_at, parent_message_id, conversation_id, content,
       message_type, importance, status, msg_metadata, updated_at
  FROM messages
 WHERE conversation_id = %(conversation_id)s
 ORDER BY sent_at, id;

-- name: list_conversation_recipients
-- Every recipient row of a conversation's messages.
SELECT r.message_id, r.recipient_id, r.is_read, r.read_at
  FROM message_recipients r
  JOIN messages m ON m.id = r.message_id
 WHERE m.conversation_id = %(conversation_id)s
 ORDER BY r.message_id, r.recipient_id;

-- name: list_conversation_metadata
-- Every metadata item on a conversation's messages, oldest first.
SELECT a.id, a.message_id, a.key, a.value, a.agent_id, a.created_at
  FROM agent_message_metadata a
  JOIN messages m ON m.id = a.message_id
 WHERE m.conversation_id = %(conversation_id)s
 ORDER BY a.created_at, a.id;

-- name: list_conversation_agents
-- Every agent that sent or received a message in a conversation, once each.
SELECT id, agent_name, ip_address, port, created_at, updated_at
  FROM agents
 WHERE id IN (SELECT sender_id FROM messages WHERE conversation_id = %(conversation_id)s
              UNION
              SELECT r.recipient_id
                FROM message_recipients r
                JOIN messages m ON m.id = r.message_id
               WHERE m.conversation_id = %(conversation_id)s)
 ORDER BY created_at, id;
