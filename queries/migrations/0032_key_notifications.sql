-- Tell every replica, at commit, that an agent's key changed (rotated by the API, or by
-- an operator's UPDATE): streams opened with the old key check it then and end, so an
-- idle stream needs no query of its key at each heartbeat. Told apart on the inbox
-- channel by its first word, like 'retired'.
CREATE FUNCTION notify_rekeyed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify(inbox_channel(), concat_ws(' ', 'rekeyed', NEW.id));
    RETURN NULL;
END
$$;
CREATE TRIGGER agents_key_changed AFTER UPDATE OF api_key_digest ON agents
    FOR EACH ROW WHEN (OLD.api_key_digest IS DISTINCT FROM NEW.api_key_digest)
    EXECUTE FUNCTION notify_rekeyed();
