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
 WHERE id = %(agent_id)s;

-- name: get_agent_profile
-- One agent by id with its webhook, for itself or the admin; no row means 404.
SELECT id, agent_name, ip_address, port,
       rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at,
       webhook_url, rfc3339(webhook_disabled_at) AS webhook_disabled_at
  FROM agents
 WHERE id = %(agent_id)s;

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
SELECT a.id, a.agent_name, rfc3339(a.created_at) AS created_at,
       CASE WHEN %(activity)s THEN
           (SELECT count(*)::integer
              FROM message_recipients r
             WHERE r.recipient_id = a.id AND NOT r.is_read)
       END AS unread_count,
       CASE WHEN %(activity)s THEN
           rfc3339(greatest(
               (SELECT max(r.sent_at) FROM message_recipients r WHERE r.recipient_id = a.id),
               (SELECT max(m.sent_at) FROM messages m WHERE m.sender_id = a.id)))
       END AS last_active_at,
       lower(a.agent_name) AS sort_name
  FROM agents a
 WHERE (lower(a.agent_name) COLLATE "C", a.id) > (%(after_name)s, %(after_id)s)
   AND lower(a.agent_name) COLLATE "C" >= lower(%(prefix)s)
   AND lower(a.agent_name) COLLATE "C" < lower(%(prefix)s) || repeat(chr(1114111), 256)
 ORDER BY lower(a.agent_name) COLLATE "C", a.id
 LIMIT %(limit)s;
