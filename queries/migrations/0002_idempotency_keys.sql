-- Idempotency-Key on POST /messages, /agents and /conversations: the first 201
-- response to a (scope, key), replayed to every retry with the same body.
-- scope is the route ("POST /messages") while the service has no callers; when
-- authentication lands it must become the caller (plus the route), so that two
-- callers' keys never meet. Rows older than 24 hours may be purged.
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    status       smallint,
    response     bytea,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
