-- name: count_search_terms
-- How many terms and operators a search text makes (0: nothing to search for, a 422).
SELECT numnode(search_query(%(q)s));

-- name: search_messages_by_relevance
-- A page of an agent's sent and/or received messages matching a search, best first and
-- newest first among equals, after a sort key (rank, sent_at, id). Only the agent's own
-- mail is read: the GIN index finds the matches of a rare word, the agent's mailbox
-- indexes bound a common one. A message sent to oneself is listed once, as received.
-- search_query(%(q)s) is written out where it is used (not in a CTE): the planner folds
-- it into a constant and estimates from the column's statistics how rare its words are.
-- Each row carries page_bytes (content twice: it and its snippet, plus metadata, up to
-- it); the rows stop once those pass max_bytes (handlers/pagination.py fit()).
WITH parties AS (
    SELECT r.message_id, 'received' AS direction, r.is_read, r.read_at
      FROM message_recipients r
     WHERE %(received)s
       AND r.recipient_id = %(agent_id)s
       AND (%(since)s::timestamptz IS NULL OR r.sent_at >= %(since)s)
       AND (%(until)s::timestamptz IS NULL OR r.sent_at < %(until)s)
     UNION ALL
    SELECT m.id, 'sent', NULL, NULL
      FROM messages m
     WHERE %(sent)s
       AND m.sender_id = %(agent_id)s
       AND (%(since)s::timestamptz IS NULL OR m.sent_at >= %(since)s)
       AND (%(until)s::timestamptz IS NULL OR m.sent_at < %(until)s)
       AND NOT (%(received)s AND EXISTS (
               SELECT 1 FROM message_recipients s
                WHERE s.message_id = m.id AND s.recipient_id = %(agent_id)s))
), hits AS (
    SELECT m.id, m.sent_at, ts_rank(m.search_vector, search_query(%(q)s)) AS rank,
           p.direction, p.is_read, p.read_at
      FROM parties p
      JOIN messages m ON m.id = p.message_id
     WHERE m.search_vector @@ search_query(%(q)s)
       AND (%(conversation_id)s::uuid IS NULL OR m.conversation_id = %(conversation_id)s)
), page AS (
    SELECT id, sent_at, rank, direction, is_read, read_at
      FROM hits
     WHERE (rank, sent_at, id) < (%(after_rank)s::real, %(after_sent_at)s, %(after_id)s)
     ORDER BY rank DESC, sent_at DESC, id DESC
     LIMIT %(limit)s
)
SELECT id, sender_id, sent_at, parent_message_id, conversation_id, content, message_type,
       importance, status, msg_metadata, updated_at, direction, is_read, read_at,
       search_snippet(content, search_query(%(q)s)) AS snippet, rank, page_bytes
  FROM (SELECT m.id, m.sender_id, rfc3339(m.sent_at) AS sent_at, m.parent_message_id,
               m.conversation_id, m.content, m.message_type, m.importance, m.status,
               m.msg_metadata, rfc3339(m.updated_at) AS updated_at, p.direction, p.is_read,
               rfc3339(p.read_at) AS read_at, p.rank,
               row_number() OVER w AS n, sum(size.bytes) OVER w AS page_bytes, size.bytes
          FROM page p
          JOIN messages m ON m.id = p.id
         CROSS JOIN LATERAL (SELECT message_bytes(m.content, m.msg_metadata)
                                    + octet_length(m.content) AS bytes) AS size
        WINDOW w AS (ORDER BY p.rank DESC, p.sent_at DESC, p.id DESC ROWS UNBOUNDED PRECEDING)
       ) AS sized
 WHERE n <= 2 OR page_bytes - bytes <= %(max_bytes)s
 ORDER BY n;

-- name: search_messages_by_time
-- A page of an agent's sent and/or received messages matching a search, newest first,
-- after a sort key (sent_at, id); otherwise as search_messages_by_relevance. Each arm is
-- limited on its own, as in the mailbox: for a common word the agent's mailbox index is
-- walked newest first and stops at the page's end, for a rare one the GIN index is read.
WITH received AS (
    SELECT r.message_id, r.sent_at, r.is_read, r.read_at
      FROM message_recipients r
      JOIN messages m ON m.id = r.message_id
     WHERE %(received)s
       AND r.recipient_id = %(agent_id)s
       AND (r.sent_at, r.message_id) < (%(after_sent_at)s, %(after_id)s)
       AND (%(since)s::timestamptz IS NULL OR r.sent_at >= %(since)s)
       AND (%(until)s::timestamptz IS NULL OR r.sent_at < %(until)s)
       AND m.search_vector @@ search_query(%(q)s)
       AND (%(conversation_id)s::uuid IS NULL OR m.conversation_id = %(conversation_id)s)
     ORDER BY r.sent_at DESC, r.message_id DESC
     LIMIT %(limit)s
), sent AS (
    SELECT m.id AS message_id, m.sent_at
      FROM messages m
     WHERE %(sent)s
       AND m.sender_id = %(agent_id)s
       AND (m.sent_at, m.id) < (%(after_sent_at)s, %(after_id)s)
       AND (%(since)s::timestamptz IS NULL OR m.sent_at >= %(since)s)
       AND (%(until)s::timestamptz IS NULL OR m.sent_at < %(until)s)
       AND m.search_vector @@ search_query(%(q)s)
       AND (%(conversation_id)s::uuid IS NULL OR m.conversation_id = %(conversation_id)s)
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
SELECT id, sender_id, sent_at, parent_message_id, conversation_id, content, message_type,
       importance, status, msg_metadata, updated_at, direction, is_read, read_at,
       search_snippet(content, search_query(%(q)s)) AS snippet, rank, page_bytes
  FROM (SELECT m.id, m.sender_id, rfc3339(m.sent_at) AS sent_at, m.parent_message_id,
               m.conversation_id, m.content, m.message_type, m.importance, m.status,
               m.msg_metadata, rfc3339(m.updated_at) AS updated_at, p.direction, p.is_read,
               rfc3339(p.read_at) AS read_at, 0::real AS rank,
               row_number() OVER w AS n, sum(size.bytes) OVER w AS page_bytes, size.bytes
          FROM page p
          JOIN messages m ON m.id = p.message_id
         CROSS JOIN LATERAL (SELECT message_bytes(m.content, m.msg_metadata)
                                    + octet_length(m.content) AS bytes) AS size
        WINDOW w AS (ORDER BY p.sent_at DESC, p.message_id DESC ROWS UNBOUNDED PRECEDING)
       ) AS sized
 WHERE n <= 2 OR page_bytes - bytes <= %(max_bytes)s
 ORDER BY n;
