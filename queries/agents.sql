-- name: create_agent
-- Register an agent with the digest of its API key and, with a webhook, its signing secret.
INSERT INTO agents (agent_name, ip_address, port, api_key_digest, webhook_url, webhook_secret)
VALUES (%(agent_name)s, %(ip_address)s, %(port)s, %(digest)s, %(webhook_url)s,
        %(webhook_secret)s)
RETURNING id, agent_name, ip_address, port,
          rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at,
          webhook_url, rfc3339(webhook_disabled_at) AS webhook_disabled_at;

-- name: get_agent
-- One agent by id, as others may see it (no webhook); no row means 404.
SELECT id, agent_name, ip_address, port,
       rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at
  FROM agents
 WHERE id = %(agent_id)s
   AND retired_at IS NULL;

-- name: get_agent_profile
-- One agent by id with its webhook, for itself or the admin; no row (or retired) means 404.
SELECT id, agent_name, ip_address, port,
       rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at,
       webhook_url, rfc3339(webhook_disabled_at) AS webhook_disabled_at
  FROM agents
 WHERE id = %(agent_id)s
   AND retired_at IS NULL;

-- name: update_agent
-- Change the fields whose set_ flag is true; no row means 404. A webhook_url sent
-- (re-)enables the webhook with the new secret and forgets the previous one; a null
-- one removes the webhook, and its pending deliveries become dead.
WITH agent AS (
    UPDATE agents
       SET agent_name = CASE WHEN %(set_agent_name)s THEN %(agent_name)s ELSE agent_name END,
           ip_address = CASE WHEN %(set_ip_address)s
                             THEN %(ip_address)s::inet ELSE ip_address END,
           port       = CASE WHEN %(set_port)s THEN %(port)s::integer ELSE port END,
           webhook_url = CASE WHEN %(set_webhook_url)s
                              THEN %(webhook_url)s::text ELSE webhook_url END,
           webhook_secret = CASE WHEN %(set_webhook_url)s
                                 THEN %(webhook_secret)s::text ELSE webhook_secret END,
           webhook_previous_secret = CASE WHEN %(set_webhook_url)s
                                          THEN NULL ELSE webhook_previous_secret END,
           webhook_previous_until = CASE WHEN %(set_webhook_url)s
                                         THEN NULL ELSE webhook_previous_until END,
           webhook_disabled_at = CASE WHEN %(set_webhook_url)s
                                      THEN NULL ELSE webhook_disabled_at END,
           updated_at = clock_timestamp()
     WHERE id = %(agent_id)s
       AND retired_at IS NULL
    RETURNING id, agent_name, ip_address, port, created_at, updated_at, webhook_url,
              webhook_disabled_at
), orphaned AS (
    UPDATE webhook_deliveries d
       SET status = 'dead', last_error = 'The agent removed its webhook'
      FROM agent
     WHERE %(set_webhook_url)s AND %(webhook_url)s::text IS NULL
       AND d.agent_id = agent.id AND d.status = 'pending'
)
SELECT id, agent_name, ip_address, port,
       rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at,
       webhook_url, rfc3339(webhook_disabled_at) AS webhook_disabled_at
  FROM agent;

-- name: list_directory
-- A page of agents by lower-cased name (byte order) then id, after a sort key, whose
-- lower-cased name starts with a prefix ('' for all): one range of agents_by_lower_name.
-- A name has at most 255 characters, so every name with the prefix sorts below the prefix
-- followed by 256 copies of the highest code point, and nothing else in that range does.
-- With activity (the admin's view), each one's unread count and last message time.
-- A retired agent is not listed (docs/lifecycle.md).
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
                 WHERE a.retired_at IS NULL
                   AND (lower(a.agent_name) COLLATE "C", a.id) > (%(after_name)s, %(after_id)s)
                   AND lower(a.agent_name) COLLATE "C" >= lower(%(prefix)s)
                   AND lower(a.agent_name) COLLATE "C"
                       < lower(%(prefix)s) || repeat(chr(1114111), 256)
                 ORDER BY lower(a.agent_name) COLLATE "C", a.id
                 LIMIT %(limit)s) AS d
        WINDOW w AS (ORDER BY d.sort_name COLLATE "C", d.id ROWS UNBOUNDED PRECEDING)) AS sized
 WHERE n <= 2 OR page_bytes - octet_length(agent_name) <= %(max_bytes)s
 ORDER BY n;

-- name: retire_agent
-- Retire an agent: its key is cleared (it stops working at once), retired_at stamped
-- (kept from the first time), its pending webhook deliveries dead, and every replica
-- told to end its streams; 0: no such agent.
-- The stored answer of the POST /agents that created it is forgotten too, so a retry of
-- that POST registers a new agent instead of replaying a retired one.
WITH retired AS (
    UPDATE agents
       SET retired_at = COALESCE(retired_at, clock_timestamp()),
           api_key_digest = NULL
     WHERE id = %(agent_id)s
    RETURNING id
), undelivered AS (
    UPDATE webhook_deliveries d
       SET status = 'dead', last_error = 'The agent was retired'
      FROM retired
     WHERE d.agent_id = retired.id AND d.status = 'pending'
), replays AS (
    DELETE FROM idempotency_keys
     WHERE right(scope, 13) = ' POST /agents'
       AND position(convert_to(%(agent_id)s::text, 'UTF8') IN response) > 0
       AND EXISTS (SELECT 1 FROM retired)
    RETURNING key
)
SELECT count(*) FROM retired WHERE notify_retired(id) IS NOT NULL;

-- name: purge_agent
-- Erase what only a (retired) agent held, then its row: its metadata, its received copies,
-- the messages nobody else sent or received (replies to them lose their parent), its
-- Idempotency-Keys and stored responses that name it. What it sent to others stays, the
-- sender shown as null (ON DELETE SET NULL), as do conversations it started. All data-
-- modifying parts see the rows as they were before the statement.
WITH held AS (
    SELECT message_id FROM message_parties WHERE agent_id = %(agent_id)s
), only_held AS (
    SELECT m.id
      FROM messages m
     WHERE m.id IN (SELECT message_id FROM held)
       AND (m.sender_id IS NULL OR m.sender_id = %(agent_id)s)
       AND NOT EXISTS (SELECT 1 FROM message_recipients r
                        WHERE r.message_id = m.id AND r.recipient_id <> %(agent_id)s)
), unlinked AS (
    UPDATE messages
       SET parent_message_id = NULL
     WHERE parent_message_id IN (SELECT id FROM only_held)
       AND id NOT IN (SELECT id FROM only_held)
    RETURNING id
), own_notes AS (
    DELETE FROM agent_message_metadata
     WHERE agent_id = %(agent_id)s
    RETURNING id
), other_notes AS (
    -- Apart from own_notes (each by its own index): no row is deleted twice.
    DELETE FROM agent_message_metadata
     WHERE message_id IN (SELECT id FROM only_held)
       AND agent_id IS DISTINCT FROM %(agent_id)s
    RETURNING id
), copies AS (
    DELETE FROM message_recipients
     WHERE recipient_id = %(agent_id)s
    RETURNING message_id
), erased AS (
    DELETE FROM messages
     WHERE id IN (SELECT id FROM only_held)
    RETURNING id
), replays AS (
    DELETE FROM idempotency_keys
     WHERE starts_with(scope, %(agent_id)s::text || ' ')
        OR position(convert_to(%(agent_id)s::text, 'UTF8') IN response) > 0
    RETURNING key
), agent AS (
    DELETE FROM agents
     WHERE id = %(agent_id)s
    RETURNING id
)
SELECT (SELECT count(*) FROM agent) AS agents,
       (SELECT count(*) FROM copies) AS received_copies,
       (SELECT count(*) FROM erased) AS messages,
       (SELECT count(*) FROM own_notes) + (SELECT count(*) FROM other_notes) AS metadata,
       (SELECT count(*) FROM replays) AS idempotency_keys,
       (SELECT count(*) FROM unlinked) AS replies_unlinked;
