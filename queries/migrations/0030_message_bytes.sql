-- What a message counts for in a page's byte budget (MAILROOM_MAX_RESPONSE_BYTES): its
-- content and its metadata as text. One definition for every paginated statement;
-- a one-expression SQL function, so the planner inlines it.
CREATE FUNCTION message_bytes(content text, msg_metadata json) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT octet_length(content)::bigint + coalesce(octet_length(msg_metadata::text), 0) $$;
