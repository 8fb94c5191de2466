-- Webhooks (issue 14): an agent's endpoint, its signing secrets, and the outbox of
-- deliveries written in the same statement as the message they carry.

-- webhook_secret is the Standard Webhooks secret ('whsec_' + base64 of 32 bytes),
-- stored because it signs; webhook_previous_secret keeps signing alongside it until
-- webhook_previous_until after a rotation. webhook_disabled_at is set when the
-- endpoint answered 410 Gone; setting webhook_url again clears it.
ALTER TABLE agents
    ADD COLUMN webhook_url             text CHECK (length(webhook_url) <= 2048),
    ADD COLUMN webhook_secret          text,
    ADD COLUMN webhook_previous_secret text,
    ADD COLUMN webhook_previous_until  timestamptz,
    ADD COLUMN webhook_disabled_at     timestamptz;

-- One row per (message, recipient with a webhook). The id is the webhook-id header,
-- the same on every attempt. status: pending (next_attempt_at says when; a claimed
-- row's next_attempt_at is pushed past the attempt's deadline, its lease), delivered
-- or dead. attempts counts the attempts begun since the row was made or retried.
-- A delivery goes with its message and its agent when either is erased.
CREATE TABLE webhook_deliveries (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id         uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    message_id       uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_attempt_at  timestamptz,
    last_status_code smallint,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at     timestamptz,
    UNIQUE (message_id, agent_id)
);

-- The dispatchers' queue: due pending rows, oldest due first.
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- An agent's deliveries, newest first (GET /agents/{id}/deliveries).
CREATE INDEX webhook_deliveries_by_agent
    ON webhook_deliveries (agent_id, created_at, id);
-- The dead letters, counted for /metrics without reading the delivered ones.
CREATE INDEX webhook_deliveries_dead
    ON webhook_deliveries (created_at) WHERE status = 'dead';
-- Purging delivered rows past the retention period.
CREATE INDEX webhook_deliveries_delivered
    ON webhook_deliveries (delivered_at) WHERE status = 'delivered';

-- The channel that wakes every replica's dispatchers when a delivery is written.
CREATE FUNCTION webhook_channel() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 'mailroom_webhooks' $$;
