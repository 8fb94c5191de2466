-- name: get_agent_by_key
-- The agent holding an API key, found by the key's SHA-256 digest; no row means 401.
SELECT id
  FROM agents
 WHERE api_key_digest = %(digest)s
   AND retired_at IS NULL;

-- name: set_api_key
-- Replace an agent's key (the old one stops working at once); no row means 404.
UPDATE agents
   SET api_key_digest = %(digest)s
 WHERE id = %(agent_id)s
   AND retired_at IS NULL
RETURNING id;

-- name: get_message_sender
-- Who sent a message, and whether it exists: the owner check of edits and new recipients.
SELECT sender_id AS owner
  FROM messages
 WHERE id = %(message_id)s;

-- name: get_message_party
-- Whether an agent sent or received a message; no row means the message does not exist.
SELECT EXISTS (SELECT 1
                 FROM message_parties p
                WHERE p.message_id = m.id AND p.agent_id = %(agent_id)s::uuid)
  FROM messages m
 WHERE m.id = %(message_id)s;

-- name: get_metadata_owner
-- The agent that attached a metadata item; no row means 404.
SELECT agent_id AS owner
  FROM agent_message_metadata
 WHERE id = %(metadata_id)s;

-- name: get_conversation_party
-- Whether an agent takes part in a conversation (started it, sent or received in it);
-- no row means the conversation does not exist.
SELECT c.created_by IS NOT DISTINCT FROM %(agent_id)s::uuid
       OR EXISTS (SELECT 1
                    FROM messages m
                    JOIN message_parties p ON p.message_id = m.id
                   WHERE m.conversation_id = c.id AND p.agent_id = %(agent_id)s::uuid)
  FROM conversations c
 WHERE c.id = %(conversation_id)s;

-- name: key_is_current
-- Whether an agent still holds this key: a stream or long-poll opened with a key that
-- has since been replaced ends.
SELECT EXISTS (SELECT 1 FROM agents WHERE id = %(agent_id)s AND api_key_digest = %(digest)s);

-- name: get_conversation_starter
-- Who started a conversation (NULL: the operator, or auth was off); no row means 404.
SELECT created_by AS owner
  FROM conversations
 WHERE id = %(conversation_id)s;
