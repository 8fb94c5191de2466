-- A message may not be its own parent, nor reply to one of its own replies
-- (issue 12): walking parent_message_id up from any message must end.
--
-- New messages cannot close a cycle (no message points at an id not yet made),
-- so only a changed parent is checked. The check takes a transaction lock first:
-- two changes committed at the same moment could each miss the other's half of
-- a cycle, so the second waits for the first, and the query that follows it (a
-- new snapshot, READ COMMITTED) sees what the first committed.
CREATE FUNCTION refuse_reply_cycle() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1919250540, 0);  -- 'repl': one change of parent at a time
    IF EXISTS (
        WITH RECURSIVE ancestors (id) AS (
            SELECT NEW.parent_message_id
             UNION
            SELECT m.parent_message_id
              FROM messages m
              JOIN ancestors a ON m.id = a.id
             WHERE m.parent_message_id IS NOT NULL
        )
        SELECT 1 FROM ancestors WHERE id = NEW.id
    ) THEN
        RAISE EXCEPTION 'message % would be its own ancestor', NEW.id
              USING ERRCODE = 'check_violation', CONSTRAINT = 'messages_reply_cycle',
                    COLUMN = 'parent_message_id', TABLE = 'messages';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER messages_reply_cycle
    BEFORE UPDATE OF parent_message_id ON messages
    FOR EACH ROW
    WHEN (NEW.parent_message_id IS NOT NULL
          AND NEW.parent_message_id IS DISTINCT FROM OLD.parent_message_id)
    EXECUTE FUNCTION refuse_reply_cycle();
