-- name: create_agent
-- Register an agent with the digest of its API key; the id and timestamps are the server's.
INSERT INTO agents (agent_name, ip_address, port, api_key_digest)
VALUES (%(agent_name)s, %(ip_address)s, %(port)s, %(digest)s)
RETURNING id, agent_name, ip_address, port,
          rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at;

-- name: get_agent
-- One agent by id; no row means 404.
SELECT id, agent_name, ip_address, port,
       rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at
  FROM agents
 WHERE id = %(agent_id)s;

-- name: update_agent
-- Change the fields whose set_ flag is true; no row means 404.
UPDATE agents
   SET agent_name = CASE WHEN %(set_agent_name)s THEN %(agent_name)s ELSE agent_name END,
       ip_address = CASE WHEN %(set_ip_address)s THEN %(ip_address)s::inet ELSE ip_address END,
       port       = CASE WHEN %(set_port)s THEN %(port)s::integer ELSE port END,
       updated_at = clock_timestamp()
 WHERE id = %(agent_id)s
RETURNING id, agent_name, ip_address, port,
          rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at;

-- name: list_directory
-- A page of agents by lower-cased name (byte order) then id, after a sort key, whose
-- lower-cased name starts with a prefix ('' for all): one range of agents_by_lower_name.
-- A name has at most 255 characters, so every name with the prefix sorts below the prefix
-- followed by 256 copies of the highest code point, and nothing else in that range does.
-- With activity (the admin's view), each one's unread count and last message time.
-- Each row carries page_bytes, the bytes of the names up to it; the rows stop once those
-- pass max_bytes (handlers/pagination.py fit() takes the page).
SELECT id, agent_name, created_at, unread_count, last_active_at, sort_name, page_bytes
  FROM (SELECT d.*, row_number() OVER w AS n, sum(octet_length(d.agent_name)) OVER w AS page_bytes
          FROM (SELECT a.id, a.agent_name, rfc3339(a.created_at) AS created_at,
                       CASE WHEN %(activity)s THEN
                           (SELECT count(*)::integer
                              FROM message_recipients r
                             WHERE r.recipient_id = a.id AND NOT r.is_read)
                       END AS unread_count,
                       CASE WHEN %(activity)s THEN
                           rfc3339(greatest(
                               (SELECT max(r.sent_at)
                                  FROM message_recipients r
                                 WHERE r.recipient_id = a.id),
                               (SELECT max(m.sent_at) FROM messages m WHERE m.sender_id = a.id)))
                       END AS last_active_at,
                       lower(a.agent_name) AS sort_name
                  FROM agents a
                 WHERE (lower(a.agent_name) COLLATE "C", a.id) > (%(after_name)s, %(after_id)s)
                   AND lower(a.agent_name) COLLATE "C" >= lower(%(prefix)s)
                   AND lower(a.agent_name) COLLATE "C"
                       < lower(%(prefix)s) || repeat(chr(1114111), 256)
                 ORDER BY lower(a.agent_name) COLLATE "C", a.id
                 LIMIT %(limit)s) AS d
        WINDOW w AS (ORDER BY d.sort_name COLLATE "C", d.id ROWS UNBOUNDED PRECEDING)) AS sized
 WHERE n <= 2 OR page_bytes - octet_length(agent_name) <= %(max_bytes)s
 ORDER BY n;
