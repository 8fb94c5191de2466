-- name: rotate_webhook_secret
-- Issue a new signing secret; the current one keeps signing alongside it for 24 hours.
-- agent_exists false means 404; rotated_until null means the agent has no webhook.
WITH agent AS (
    SELECT id, webhook_url FROM agents WHERE id = %(agent_id)s FOR UPDATE
), rotated AS (
    UPDATE agents a
       SET webhook_previous_secret = a.webhook_secret,
           webhook_previous_until = clock_timestamp() + interval '24 hours',
           webhook_secret = %(secret)s,
           updated_at = clock_timestamp()
      FROM agent
     WHERE a.id = agent.id AND agent.webhook_url IS NOT NULL
    RETURNING a.webhook_previous_until
)
SELECT EXISTS (SELECT 1 FROM agent) AS agent_exists,
       (SELECT rfc3339(webhook_previous_until) FROM rotated) AS previous_valid_until;

-- name: claim_deliveries
-- Take up to `limit` due deliveries for this dispatcher: rows other replicas hold are
-- skipped (SKIP LOCKED), an endpoint gets no more than `per_endpoint` attempts in flight
-- here (counting `busy_counts` already running), and the lease (next_attempt_at pushed
-- past the attempt's deadline) keeps them from every other dispatcher until the result
-- is written; a replica that dies mid-attempt leaves them due again when it ends.
WITH inflight AS (
    SELECT agent_id, n
      FROM unnest(%(busy_agents)s::uuid[], %(busy_counts)s::integer[]) AS f (agent_id, n)
), candidates AS (
    SELECT d.id, d.agent_id, d.next_attempt_at
      FROM webhook_deliveries d
     WHERE d.status = 'pending'
       AND d.next_attempt_at <= clock_timestamp()
       AND d.agent_id <> ALL (%(full_agents)s::uuid[])
     ORDER BY d.next_attempt_at
     LIMIT %(scan)s
), ranked AS (
    SELECT c.id, c.next_attempt_at,
           COALESCE(f.n, 0)
             + row_number() OVER (PARTITION BY c.agent_id ORDER BY c.next_attempt_at) AS slot
      FROM candidates c
      LEFT JOIN inflight f ON f.agent_id = c.agent_id
), chosen AS (
    SELECT d.id
      FROM webhook_deliveries d
     WHERE d.id IN (SELECT id FROM ranked WHERE slot <= %(per_endpoint)s
                     ORDER BY next_attempt_at LIMIT %(limit)s)
       AND d.status = 'pending'
       AND d.next_attempt_at <= clock_timestamp()
       FOR UPDATE OF d SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d
       SET attempts = d.attempts + 1,
           last_attempt_at = clock_timestamp(),
           next_attempt_at = clock_timestamp() + make_interval(secs => %(lease)s)
      FROM chosen
     WHERE d.id = chosen.id
    RETURNING d.id, d.agent_id, d.message_id, d.attempts, d.created_at
)
SELECT c.id, c.agent_id, c.attempts, extract(epoch FROM c.created_at)::float8 AS created,
       a.webhook_url, a.webhook_secret,
       CASE WHEN a.webhook_previous_until > clock_timestamp()
            THEN a.webhook_previous_secret END AS previous_secret,
       m.id AS message_id, m.sender_id, rfc3339(m.sent_at) AS sent_at, m.parent_message_id,
       m.conversation_id, m.content, m.message_type, m.importance, m.status, m.msg_metadata,
       rfc3339(m.updated_at) AS updated_at, COALESCE(r.is_read, false) AS is_read,
       rfc3339(r.read_at) AS read_at, rfc3339(c.created_at) AS created_at
  FROM claimed c
  JOIN agents a ON a.id = c.agent_id
  JOIN messages m ON m.id = c.message_id
  LEFT JOIN message_recipients r ON r.message_id = c.message_id AND r.recipient_id = c.agent_id;

-- name: record_delivered
-- The attempt got a 2xx: delivered (unless a later claim took the row over meanwhile).
UPDATE webhook_deliveries
   SET status = 'delivered', delivered_at = clock_timestamp(), next_attempt_at = clock_timestamp(),
       last_status_code = %(status_code)s, last_error = NULL
 WHERE id = %(delivery_id)s AND attempts = %(attempt)s;

-- name: record_failed
-- The attempt failed: due again after `delay` seconds, or dead when `delay` is null.
UPDATE webhook_deliveries
   SET status = CASE WHEN %(delay)s::float8 IS NULL THEN 'dead' ELSE 'pending' END,
       next_attempt_at = clock_timestamp()
                         + make_interval(secs => COALESCE(%(delay)s::float8, 0)),
       last_status_code = %(status_code)s, last_error = %(error)s
 WHERE id = %(delivery_id)s AND attempts = %(attempt)s AND status = 'pending';

-- name: disable_webhook
-- The endpoint answered 410 Gone: the agent's webhook is disabled and its pending
-- deliveries become dead; setting webhook_url again re-enables it.
WITH agent AS (
    UPDATE agents SET webhook_disabled_at = clock_timestamp()
     WHERE id = %(agent_id)s AND webhook_url = %(webhook_url)s
    RETURNING id
)
UPDATE webhook_deliveries d
   SET status = 'dead', last_status_code = 410,
       last_error = 'The endpoint answered 410 Gone: the webhook is disabled until webhook_url is set again'
  FROM agent
 WHERE d.agent_id = agent.id AND d.status = 'pending';

-- name: get_next_due
-- Seconds until the earliest pending delivery is due (negative: overdue); null when none.
SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp())::float8
  FROM webhook_deliveries
 WHERE status = 'pending';

-- name: get_delivery_stats
-- Pending and dead deliveries, and the age in seconds of the oldest pending one, for
-- /metrics; each from its partial index, never reading the delivered rows.
SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'dead') AS dead,
       (SELECT COALESCE(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
          FROM webhook_deliveries WHERE status = 'pending') AS oldest_pending_seconds;

-- name: purge_delivered
-- Forget delivered rows older than the retention period (seconds).
DELETE FROM webhook_deliveries
 WHERE status = 'delivered'
   AND delivered_at < clock_timestamp() - make_interval(secs => %(retention)s);

-- name: list_deliveries
-- A page of an agent's deliveries, newest first, after a sort key; `status` null: all.
SELECT id, message_id, status, attempts, rfc3339(created_at) AS created_at,
       rfc3339(last_attempt_at) AS last_attempt_at, last_status_code, last_error,
       CASE WHEN status = 'pending' THEN rfc3339(next_attempt_at) END AS next_attempt_at,
       rfc3339(delivered_at) AS delivered_at
  FROM webhook_deliveries
 WHERE agent_id = %(agent_id)s
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (created_at, id) < (%(after_created_at)s, %(after_id)s)
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s;

-- name: get_delivery_status
-- One delivery's status and whether its agent's webhook works; no row means 404.
SELECT d.status, a.webhook_url IS NOT NULL AND a.webhook_disabled_at IS NULL AS webhook_works
  FROM webhook_deliveries d
  JOIN agents a ON a.id = d.agent_id
 WHERE d.id = %(delivery_id)s AND d.agent_id = %(agent_id)s;

-- name: retry_delivery
-- Send a delivered or dead delivery again, now, on a fresh retry schedule; wakes the
-- dispatchers. No row: it was pending (or vanished) meanwhile.
WITH retried AS (
    UPDATE webhook_deliveries
       SET status = 'pending', attempts = 0, next_attempt_at = clock_timestamp(),
           delivered_at = NULL
     WHERE id = %(delivery_id)s AND agent_id = %(agent_id)s AND status <> 'pending'
    RETURNING id, message_id, status, attempts, created_at, last_attempt_at,
              last_status_code, last_error, next_attempt_at, delivered_at
)
SELECT id, message_id, status, attempts, rfc3339(created_at) AS created_at,
       rfc3339(last_attempt_at) AS last_attempt_at, last_status_code, last_error,
       rfc3339(next_attempt_at) AS next_attempt_at, rfc3339(delivered_at) AS delivered_at
  FROM retried
 WHERE pg_notify(webhook_channel(), '') IS NOT NULL;

-- name: listen_webhooks
-- Receive every replica's new-delivery notifications on this connection (see listen_inbox).
DO $$ BEGIN EXECUTE format('LISTEN %%I', webhook_channel()); END $$;

-- name: get_webhook_channel
-- The channel's name, to tell its notifications from the inbox's on the listening connection.
SELECT webhook_channel();

-- name: set_webhook_secret
-- Replace the signing secret outright (a replayed create issues a new one; nothing overlaps).
UPDATE agents
   SET webhook_secret = %(secret)s, webhook_previous_secret = NULL, webhook_previous_until = NULL
 WHERE id = %(agent_id)s AND webhook_url IS NOT NULL;
