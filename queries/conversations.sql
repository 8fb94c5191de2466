-- name: create_conversation
-- Start a conversation; created_by is the agent that started it (NULL for the admin).
INSERT INTO conversations
       (title, description, archived, metadata, created_by, created_at, updated_at)
SELECT %(title)s, %(description)s, %(archived)s, %(metadata)s, %(created_by)s, now, now
  FROM (SELECT clock_timestamp() AS now) AS clock
RETURNING id, title, description, archived, metadata,
          rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at;

-- name: get_conversation
-- One conversation by id; no row means 404.
SELECT id, title, description, archived, metadata,
       rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at
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
RETURNING id, title, description, archived, metadata,
          rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at;

-- name: list_conversations
-- A page of conversations, newest first, after a sort key, optionally by archived state.
-- Each row carries page_bytes, the bytes of title, description and metadata up to it; the
-- rows stop once those pass max_bytes (handlers/pagination.py fit() takes the page).
SELECT id, title, description, archived, metadata,
       rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at, page_bytes
  FROM (SELECT c.*, row_number() OVER w AS n, sum(size.bytes) OVER w AS page_bytes, size.bytes
          FROM (SELECT c.id, c.title, c.description, c.archived, c.metadata, c.created_at,
                       c.updated_at
                  FROM conversations c
                 WHERE (%(archived)s::boolean IS NULL OR c.archived = %(archived)s::boolean)
                   AND (c.created_at, c.id) < (%(after_created_at)s, %(after_id)s)
                 ORDER BY c.created_at DESC, c.id DESC
                 LIMIT %(limit)s) AS c
         CROSS JOIN LATERAL (SELECT conversation_bytes(c.title, c.description, c.metadata)
                                    AS bytes) AS size
        WINDOW w AS (ORDER BY c.created_at DESC, c.id DESC ROWS UNBOUNDED PRECEDING)) AS sized
 WHERE n <= 2 OR page_bytes - bytes <= %(max_bytes)s
 ORDER BY n;

-- name: list_conversations_of_agent
-- Like list_conversations, only those an agent started or sent or received a message in.
-- The conversations of the agent's mail are gathered once (IN, hashed) from the agent's
-- indexes, rather than each conversation's messages checked one by one (EXISTS).
SELECT id, title, description, archived, metadata,
       rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at, page_bytes
  FROM (SELECT c.*, row_number() OVER w AS n, sum(size.bytes) OVER w AS page_bytes, size.bytes
          FROM (SELECT c.id, c.title, c.description, c.archived, c.metadata, c.created_at,
                       c.updated_at
                  FROM conversations c
                 WHERE (%(archived)s::boolean IS NULL OR c.archived = %(archived)s::boolean)
                   AND (c.created_at, c.id) < (%(after_created_at)s, %(after_id)s)
                   AND (c.created_by = %(agent_id)s
                        OR c.id IN (SELECT m.conversation_id
                                      FROM message_parties p
                                      JOIN messages m ON m.id = p.message_id
                                     WHERE p.agent_id = %(agent_id)s))
                 ORDER BY c.created_at DESC, c.id DESC
                 LIMIT %(limit)s) AS c
         CROSS JOIN LATERAL (SELECT conversation_bytes(c.title, c.description, c.metadata)
                                    AS bytes) AS size
        WINDOW w AS (ORDER BY c.created_at DESC, c.id DESC ROWS UNBOUNDED PRECEDING)) AS sized
 WHERE n <= 2 OR page_bytes - bytes <= %(max_bytes)s
 ORDER BY n;

-- name: get_conversation_messages_json
-- A page of a conversation's messages, oldest first after a sort key, each with its
-- recipients and metadata, as one JSON array built here (timestamps by rfc3339, as
-- everywhere); the sort key of the page's last message when more follow; and, over all
-- of the conversation's messages, the ids of the agents involved and the counts of the
-- details document. With an agent_id, only the messages that agent sent or received.
-- The page holds at most `limit` messages and stops before the one that would take its
-- size past max_bytes (its first message always stays). A message's size counts what
-- callers can make large: its content and msg_metadata, 100 bytes a recipient, the keys
-- and values of its metadata items. The page is chosen before its JSON is built.
WITH m AS (
    SELECT id, sender_id, sent_at, parent_message_id, conversation_id, content,
           message_type, importance, status, msg_metadata, updated_at
      FROM messages
     WHERE conversation_id = %(conversation_id)s
       AND (%(agent_id)s::uuid IS NULL
            OR EXISTS (SELECT 1
                         FROM message_parties p
                        WHERE p.message_id = messages.id AND p.agent_id = %(agent_id)s::uuid))
), receipts AS (
    SELECT message_id, recipient_id, is_read, read_at
      FROM message_recipients
     WHERE message_id = ANY (ARRAY(SELECT id FROM m))
), candidates AS (
    SELECT id, sender_id, sent_at, parent_message_id, conversation_id, content,
           message_type, importance, status, msg_metadata, updated_at
      FROM m
     WHERE (sent_at, id) > (%(after_sent_at)s, %(after_id)s)
     ORDER BY sent_at, id
     LIMIT %(limit)s + 1
), page AS (
    SELECT id, sender_id, sent_at, parent_message_id, conversation_id, content,
           message_type, importance, status, msg_metadata, updated_at, n, found
      FROM (SELECT c.*, row_number() OVER w AS n, sum(size.bytes) OVER w AS through,
                   count(*) OVER () AS found
              FROM candidates c
              LEFT JOIN (SELECT message_id, count(*) AS recipients
                           FROM receipts
                          GROUP BY message_id) AS rc ON rc.message_id = c.id
              LEFT JOIN (SELECT message_id,
                                sum(metadata_bytes(key, value)) AS bytes
                           FROM agent_message_metadata
                          WHERE message_id = ANY (ARRAY(SELECT id FROM candidates))
                          GROUP BY message_id) AS mc ON mc.message_id = c.id
             CROSS JOIN LATERAL (
                   SELECT message_bytes(c.content, c.msg_metadata)
                          + 100 * coalesce(rc.recipients, 0) + coalesce(mc.bytes, 0) AS bytes) AS size
            WINDOW w AS (ORDER BY c.sent_at, c.id ROWS UNBOUNDED PRECEDING)) AS sized
     WHERE n <= %(limit)s AND (n = 1 OR through <= %(max_bytes)s)
), r AS (
    SELECT message_id,
           json_agg(json_build_object(
                      'recipient_id', recipient_id,
                      'is_read', is_read,
                      'read_at', rfc3339(read_at))
                    ORDER BY recipient_id) AS recipients
      FROM receipts
     WHERE message_id = ANY (ARRAY(SELECT id FROM page))
     GROUP BY message_id
), md AS (
    SELECT message_id,
           json_agg(json_build_object(
                      'id', id, 'message_id', message_id, 'key', key, 'value', value,
                      'agent_id', agent_id,
                      'created_at', rfc3339(created_at))
                    ORDER BY created_at, id) AS items
      FROM agent_message_metadata
     WHERE message_id = ANY (ARRAY(SELECT id FROM page))
     GROUP BY message_id
), built AS (
    SELECT coalesce(json_agg(json_build_object(
               'id', p.id,
               'sender_id', p.sender_id,
               'sent_at', rfc3339(p.sent_at),
               'parent_message_id', p.parent_message_id,
               'conversation_id', p.conversation_id,
               'content', p.content,
               'message_type', p.message_type,
               'importance', p.importance,
               'status', p.status,
               'msg_metadata', p.msg_metadata,
               'updated_at', rfc3339(p.updated_at),
               'recipients', coalesce(r.recipients, '[]'::json),
               'metadata_items', coalesce(md.items, '[]'::json))
             ORDER BY p.n), '[]'::json)::text AS messages,
           count(*) < max(p.found) AS more,
           (array_agg(p.sent_at ORDER BY p.n DESC))[1] AS last_sent_at,
           (array_agg(p.id ORDER BY p.n DESC))[1] AS last_id
      FROM page p
      LEFT JOIN r ON r.message_id = p.id
      LEFT JOIN md ON md.message_id = p.id
)
SELECT built.messages,
       ARRAY(SELECT sender_id FROM m WHERE sender_id IS NOT NULL
             UNION SELECT recipient_id FROM receipts) AS agent_ids,
       (SELECT count(*) FROM m)::integer AS total_messages,
       (SELECT count(*) FROM receipts WHERE NOT is_read)::integer AS unread_count,
       CASE WHEN built.more THEN rfc3339(built.last_sent_at) END AS next_sent_at,
       CASE WHEN built.more THEN built.last_id END AS next_id
  FROM built;

-- name: list_agents
-- The given agents, oldest first (the agents of a conversation, for its details). With a
-- viewer (an agent's key), only the viewer's own address and port are shown.
SELECT a.id, a.agent_name,
       CASE WHEN %(viewer)s::uuid IS NULL OR a.id = %(viewer)s::uuid THEN a.ip_address END
           AS ip_address,
       CASE WHEN %(viewer)s::uuid IS NULL OR a.id = %(viewer)s::uuid THEN a.port END AS port,
       rfc3339(a.created_at) AS created_at, rfc3339(a.updated_at) AS updated_at
  FROM agents a
 WHERE a.id = ANY(%(agent_ids)s)
 ORDER BY a.created_at, a.id;
