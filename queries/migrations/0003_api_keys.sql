-- Per-agent API keys and who started a conversation (issue 4, authorization).
-- Only the SHA-256 digest of a key is stored: the plaintext is shown once, when
-- the key is issued. An agent created with MAILROOM_AUTH=off has no key until
-- one is issued with POST /agents/{agent_id}/api-key.
ALTER TABLE agents ADD COLUMN api_key_digest bytea UNIQUE;

-- The agent that started a conversation takes part in it before any message;
-- NULL for conversations started by the operator or with MAILROOM_AUTH=off.
ALTER TABLE conversations ADD COLUMN created_by uuid REFERENCES agents (id);
CREATE INDEX conversations_created_by ON conversations (created_by) WHERE created_by IS NOT NULL;

-- From here on idempotency_keys.scope is "<caller> <method> <path>" (the caller
-- is an agent id, "admin", or "-" with MAILROOM_AUTH=off), so two callers'
-- Idempotency-Keys never meet.
