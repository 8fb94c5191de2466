-- What a message and a conversation count for in a page's byte budget
-- (MAILROOM_MAX_RESPONSE_BYTES): the text a caller can make large. One definition for
-- every paginated statement; one-expression SQL functions, so the planner inlines them.
CREATE FUNCTION message_bytes(content text, msg_metadata json) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT octet_length(content)::bigint + coalesce(octet_length(msg_metadata::text), 0) $$;

CREATE FUNCTION conversation_bytes(title text, description text, metadata json) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(octet_length(title), 0)::bigint + coalesce(octet_length(description), 0)
                 + octet_length(metadata::text) $$;
