-- name: claim_idempotency_key
-- Take a key for this request; no row means another request holds it (this one
-- waited for that one's transaction to end, and reads its response next).
INSERT INTO idempotency_keys (scope, key, request_hash)
VALUES (%(scope)s, %(key)s, %(request_hash)s)
ON CONFLICT (scope, key) DO NOTHING
RETURNING true;

-- name: get_idempotent_response
-- The request hash and response stored under a key.
SELECT request_hash, status, response
  FROM idempotency_keys
 WHERE scope = %(scope)s AND key = %(key)s;

-- name: save_idempotent_response
-- Keep the response of the request that claimed the key, in its transaction.
UPDATE idempotency_keys
   SET status = %(status)s, response = %(response)s
 WHERE scope = %(scope)s AND key = %(key)s;

-- name: purge_idempotency_keys
-- Forget keys older than a day (the contract keeps them at least 24 hours).
DELETE FROM idempotency_keys
 WHERE created_at < clock_timestamp() - interval '24 hours';
