-- What a metadata item counts for: in its message's cap (MAILROOM_MAX_METADATA_BYTES)
-- and in a details page's byte budget. A one-expression SQL function the planner inlines.
CREATE FUNCTION metadata_bytes(key text, value text) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT octet_length(key)::bigint + coalesce(octet_length(value), 0) $$;
