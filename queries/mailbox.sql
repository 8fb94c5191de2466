-- name: list_mailbox_desc
-- A page of what an agent sent and/or received, newest first, after a sort key.
-- A message an agent sent to itself is listed once, as received, unless only sent is asked.
-- Each row carries page_bytes, the bytes of content and metadata up to it; the rows stop
-- once those pass max_bytes (handlers/pagination.py fit() takes the page).
WITH received AS (
    SELECT r.message_id, r.sent_at, r.is_read, r.read_at
      FROM message_recipients r
     WHERE %(received)s
       AND r.recipient_id = %(agent_id)s
       AND (r.sent_at, r.message_id) < (%(after_sent_at)s, %(after_id)s)
     ORDER BY r.sent_at DESC, r.message_id DESC
     LIMIT %(limit)s
), sent AS (
    SELECT m.id AS message_id, m.sent_at
      FROM messages m
     WHERE %(sent)s
       AND m.sender_id = %(agent_id)s
       AND (m.sent_at, m.id) < (%(after_sent_at)s, %(after_id)s)
       AND NOT (%(received)s AND EXISTS (
               SELECT 1 FROM message_recipients s
                WHERE s.message_id = m.id AND s.recipient_id = %(agent_id)s))
     ORDER BY m.sent_at DESC, m.id DESC
     LIMIT %(limit)s
), page AS (
    SELECT message_id, sent_at, 'received' AS direction, is_read, read_at FROM received
     UNION ALL
    SELECT message_id, sent_at, 'sent', NULL, NULL FROM sent
     ORDER BY sent_at DESC, message_id DESC
     LIMIT %(limit)s
)
SELECT id, sender_id, rfc3339(sent_at) AS sent_at, parent_message_id, conversation_id,
       content, message_type, importance, status, msg_metadata,
       rfc3339(updated_at) AS updated_at, direction, is_read, rfc3339(read_at) AS read_at,
       page_bytes
  FROM (SELECT m.id, m.sender_id, m.sent_at, m.parent_message_id, m.conversation_id, m.content,
               m.message_type, m.importance, m.status, m.msg_metadata, m.updated_at,
               p.direction, p.is_read, p.read_at, size.bytes,
               row_number() OVER w AS n, sum(size.bytes) OVER w AS page_bytes
          FROM page p
          JOIN messages m ON m.id = p.message_id
         CROSS JOIN LATERAL (SELECT message_bytes(m.content, m.msg_metadata) AS bytes) AS size
        WINDOW w AS (ORDER BY p.sent_at DESC, p.message_id DESC ROWS UNBOUNDED PRECEDING)) AS sized
 WHERE n <= 2 OR page_bytes - bytes <= %(max_bytes)s
 ORDER BY n;

-- name: list_mailbox_asc
-- A page of what an agent sent and/or received, oldest first, after a sort key.
-- A message an agent sent to itself is listed once, as received, unless only sent is asked.
-- Each row carries page_bytes, the bytes of content and metadata up to it; the rows stop
-- once those pass max_bytes (handlers/pagination.py fit() takes the page).
WITH received AS (
    SELECT r.message_id, r.sent_at, r.is_read, r.read_at
      FROM message_recipients r
     WHERE %(received)s
       AND r.recipient_id = %(agent_id)s
       AND (r.sent_at, r.message_id) > (%(after_sent_at)s, %(after_id)s)
     ORDER BY r.sent_at, r.message_id
     LIMIT %(limit)s
), sent AS (
    SELECT m.id AS message_id, m.sent_at
      FROM messages m
     WHERE %(sent)s
       AND m.sender_id = %(agent_id)s
       AND (m.sent_at, m.id) > (%(after_sent_at)s, %(after_id)s)
       AND NOT (%(received)s AND EXISTS (
               SELECT 1 FROM message_recipients s
                WHERE s.message_id = m.id AND s.recipient_id = %(agent_id)s))
     ORDER BY m.sent_at, m.id
     LIMIT %(limit)s
), page AS (
    SELECT message_id, sent_at, 'received' AS direction, is_read, read_at FROM received
     UNION ALL
    SELECT message_id, sent_at, 'sent', NULL, NULL FROM sent
     ORDER BY sent_at, message_id
     LIMIT %(limit)s
)
SELECT id, sender_id, rfc3339(sent_at) AS sent_at, parent_message_id, conversation_id,
       content, message_type, importance, status, msg_metadata,
       rfc3339(updated_at) AS updated_at, direction, is_read, rfc3339(read_at) AS read_at,
       page_bytes
  FROM (SELECT m.id, m.sender_id, m.sent_at, m.parent_message_id, m.conversation_id, m.content,
               m.message_type, m.importance, m.status, m.msg_metadata, m.updated_at,
               p.direction, p.is_read, p.read_at, size.bytes,
               row_number() OVER w AS n, sum(size.bytes) OVER w AS page_bytes
          FROM page p
          JOIN messages m ON m.id = p.message_id
         CROSS JOIN LATERAL (SELECT message_bytes(m.content, m.msg_metadata) AS bytes) AS size
        WINDOW w AS (ORDER BY p.sent_at, p.message_id ROWS UNBOUNDED PRECEDING)) AS sized
 WHERE n <= 2 OR page_bytes - bytes <= %(max_bytes)s
 ORDER BY n;

-- name: list_unread_desc
-- A page of an agent's received, unread messages, newest first, after a sort key.
-- Each row carries page_bytes, the bytes of content and metadata up to it; the rows stop
-- once those pass max_bytes (handlers/pagination.py fit() takes the page).
WITH page AS (
    SELECT r.message_id, r.sent_at, 'received' AS direction, r.is_read, r.read_at
      FROM message_recipients r
     WHERE r.recipient_id = %(agent_id)s
       AND NOT r.is_read
       AND (r.sent_at, r.message_id) < (%(after_sent_at)s, %(after_id)s)
     ORDER BY r.sent_at DESC, r.message_id DESC
     LIMIT %(limit)s
)
SELECT id, sender_id, rfc3339(sent_at) AS sent_at, parent_message_id, conversation_id,
       content, message_type, importance, status, msg_metadata,
       rfc3339(updated_at) AS updated_at, direction, is_read, rfc3339(read_at) AS read_at,
       page_bytes
  FROM (SELECT m.id, m.sender_id, m.sent_at, m.parent_message_id, m.conversation_id, m.content,
               m.message_type, m.importance, m.status, m.msg_metadata, m.updated_at,
               p.direction, p.is_read, p.read_at, size.bytes,
               row_number() OVER w AS n, sum(size.bytes) OVER w AS page_bytes
          FROM page p
          JOIN messages m ON m.id = p.message_id
         CROSS JOIN LATERAL (SELECT message_bytes(m.content, m.msg_metadata) AS bytes) AS size
        WINDOW w AS (ORDER BY p.sent_at DESC, p.message_id DESC ROWS UNBOUNDED PRECEDING)) AS sized
 WHERE n <= 2 OR page_bytes - bytes <= %(max_bytes)s
 ORDER BY n;

-- name: list_unread_asc
-- A page of an agent's received, unread messages, oldest first, after a sort key.
-- Each row carries page_bytes, the bytes of content and metadata up to it; the rows stop
-- once those pass max_bytes (handlers/pagination.py fit() takes the page).
WITH page AS (
    SELECT r.message_id, r.sent_at, 'received' AS direction, r.is_read, r.read_at
      FROM message_recipients r
     WHERE r.recipient_id = %(agent_id)s
       AND NOT r.is_read
       AND (r.sent_at, r.message_id) > (%(after_sent_at)s, %(after_id)s)
     ORDER BY r.sent_at, r.message_id
     LIMIT %(limit)s
)
SELECT id, sender_id, rfc3339(sent_at) AS sent_at, parent_message_id, conversation_id,
       content, message_type, importance, status, msg_metadata,
       rfc3339(updated_at) AS updated_at, direction, is_read, rfc3339(read_at) AS read_at,
       page_bytes
  FROM (SELECT m.id, m.sender_id, m.sent_at, m.parent_message_id, m.conversation_id, m.content,
               m.message_type, m.importance, m.status, m.msg_metadata, m.updated_at,
               p.direction, p.is_read, p.read_at, size.bytes,
               row_number() OVER w AS n, sum(size.bytes) OVER w AS page_bytes
          FROM page p
          JOIN messages m ON m.id = p.message_id
         CROSS JOIN LATERAL (SELECT message_bytes(m.content, m.msg_metadata) AS bytes) AS size
        WINDOW w AS (ORDER BY p.sent_at, p.message_id ROWS UNBOUNDED PRECEDING)) AS sized
 WHERE n <= 2 OR page_bytes - bytes <= %(max_bytes)s
 ORDER BY n;

-- name: agent_exists
-- Whether an agent id names a registered agent (retired or not: its history stays readable).
SELECT EXISTS (SELECT 1 FROM agents WHERE id = %(agent_id)s);

-- name: agent_is_active
-- Whether an agent is active (true) or retired (false); no row: no such agent.
-- Only an active agent's new mail is waited for.
SELECT retired_at IS NULL FROM agents WHERE id = %(agent_id)s;

-- name: mark_read
-- Mark every unread message the agent received up to an instant (inclusive) as read.
WITH agent AS (
    SELECT id FROM agents WHERE id = %(agent_id)s
), marked AS (
    UPDATE message_recipients r
       SET is_read = true, read_at = clock_timestamp()
      FROM agent
     WHERE r.recipient_id = agent.id
       AND NOT r.is_read
       AND r.sent_at <= %(read_up_to_date)s
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM agent) AS agent_exists,
       (SELECT count(*) FROM marked) AS updated_count;

-- name: get_unread_item
-- One message the agent received and has not read, as an unread-list item; for a stream.
SELECT m.id, m.sender_id, rfc3339(m.sent_at) AS sent_at, m.parent_message_id,
       m.conversation_id, m.content, m.message_type, m.importance, m.status, m.msg_metadata,
       rfc3339(m.updated_at) AS updated_at, 'received' AS direction, r.is_read,
       rfc3339(r.read_at) AS read_at
  FROM message_recipients r
  JOIN messages m ON m.id = r.message_id
 WHERE r.recipient_id = %(agent_id)s
   AND r.message_id = %(message_id)s
   AND NOT r.is_read;

-- name: listen_inbox
-- Receive every replica's new-message notifications on this connection: LISTEN takes no
-- parameter, so the channel named by inbox_channel() is spelled into it here.
DO $$ BEGIN EXECUTE format('LISTEN %%I', inbox_channel()); END $$;

-- name: list_unread_asc_many
-- The unread messages of many woken streams or long-polls in one read, each after its own
-- sort key and oldest first, tagged with the waiter's place in the arrays (a notification
-- burst wakes hundreds of them; one statement instead of one each). Each waiter's rows
-- carry page_bytes and stop at max_bytes, as list_unread_asc's do.
WITH waiting AS (
    SELECT w.agent_id, w.after_sent_at, w.after_id, w.waiter
      FROM unnest(%(agent_ids)s::uuid[], %(after_sent_ats)s::timestamptz[],
                  %(after_ids)s::uuid[]) WITH ORDINALITY AS w(agent_id, after_sent_at, after_id, waiter)
), page AS (
    SELECT w.waiter, r.message_id, r.sent_at, r.is_read, r.read_at
      FROM waiting w
     CROSS JOIN LATERAL (
           SELECT r.message_id, r.sent_at, r.is_read, r.read_at
             FROM message_recipients r
            WHERE r.recipient_id = w.agent_id
              AND NOT r.is_read
              AND (r.sent_at, r.message_id) > (w.after_sent_at, w.after_id)
            ORDER BY r.sent_at, r.message_id
            LIMIT %(limit)s) r
)
SELECT id, sender_id, rfc3339(sent_at) AS sent_at, parent_message_id, conversation_id,
       content, message_type, importance, status, msg_metadata,
       rfc3339(updated_at) AS updated_at, 'received' AS direction, is_read,
       rfc3339(read_at) AS read_at, page_bytes, waiter
  FROM (SELECT m.id, m.sender_id, m.sent_at, m.parent_message_id, m.conversation_id, m.content,
               m.message_type, m.importance, m.status, m.msg_metadata, m.updated_at,
               p.is_read, p.read_at, p.waiter, size.bytes,
               row_number() OVER w AS n, sum(size.bytes) OVER w AS page_bytes
          FROM page p
          JOIN messages m ON m.id = p.message_id
         CROSS JOIN LATERAL (SELECT message_bytes(m.content, m.msg_metadata) AS bytes) AS size
        WINDOW w AS (PARTITION BY p.waiter ORDER BY p.sent_at, p.message_id ROWS UNBOUNDED PRECEDING)
       ) AS sized
 WHERE n <= 2 OR page_bytes - bytes <= %(max_bytes)s
 ORDER BY waiter, n;

-- name: list_unread_desc_many
-- As list_unread_asc_many, newest first before each sort key: woken long-polls' pages.
WITH waiting AS (
    SELECT w.agent_id, w.after_sent_at, w.after_id, w.waiter
      FROM unnest(%(agent_ids)s::uuid[], %(after_sent_ats)s::timestamptz[],
                  %(after_ids)s::uuid[]) WITH ORDINALITY AS w(agent_id, after_sent_at, after_id, waiter)
), page AS (
    SELECT w.waiter, r.message_id, r.sent_at, r.is_read, r.read_at
      FROM waiting w
     CROSS JOIN LATERAL (
           SELECT r.message_id, r.sent_at, r.is_read, r.read_at
             FROM message_recipients r
            WHERE r.recipient_id = w.agent_id
              AND NOT r.is_read
              AND (r.sent_at, r.message_id) < (w.after_sent_at, w.after_id)
            ORDER BY r.sent_at DESC, r.message_id DESC
            LIMIT %(limit)s) r
)
SELECT id, sender_id, rfc3339(sent_at) AS sent_at, parent_message_id, conversation_id,
       content, message_type, importance, status, msg_metadata,
       rfc3339(updated_at) AS updated_at, 'received' AS direction, is_read,
       rfc3339(read_at) AS read_at, page_bytes, waiter
  FROM (SELECT m.id, m.sender_id, m.sent_at, m.parent_message_id, m.conversation_id, m.content,
               m.message_type, m.importance, m.status, m.msg_metadata, m.updated_at,
               p.is_read, p.read_at, p.waiter, size.bytes,
               row_number() OVER w AS n, sum(size.bytes) OVER w AS page_bytes
          FROM page p
          JOIN messages m ON m.id = p.message_id
         CROSS JOIN LATERAL (SELECT message_bytes(m.content, m.msg_metadata) AS bytes) AS size
        WINDOW w AS (PARTITION BY p.waiter ORDER BY p.sent_at DESC, p.message_id DESC ROWS UNBOUNDED PRECEDING)
       ) AS sized
 WHERE n <= 2 OR page_bytes - bytes <= %(max_bytes)s
 ORDER BY waiter, n;
