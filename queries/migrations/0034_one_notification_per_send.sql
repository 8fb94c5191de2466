-- One notification per send and 200 recipients, instead of one per recipient row:
-- 'message <sent_at in microseconds since the epoch> <message_id> <recipient_id> ...'.
-- A send to 1,000 recipients queued 1,000 notifications at its commit, and each
-- replica's listener took them one by one (docs/performance.md, Push at scale); now
-- it is 5. 200 recipients of 37 bytes keep the payload under PostgreSQL's 8,000.
-- Told apart on the inbox channel by its first word, like 'retired' and 'rekeyed'.
CREATE FUNCTION notify_recipients(message_id uuid, sent_at timestamptz, recipient_ids uuid[])
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    head text := concat_ws(' ', 'message', (extract(epoch FROM sent_at) * 1000000)::bigint,
                           message_id);
    first integer;
BEGIN
    FOR first IN 1 .. coalesce(cardinality(recipient_ids), 0) BY 200 LOOP
        PERFORM pg_notify(inbox_channel(),
                          concat_ws(' ', head, array_to_string(recipient_ids[first:first + 199], ' ')));
    END LOOP;
END
$$;

-- notify_inbox() (one recipient row, migration 0005) stays: replicas of the earlier
-- version call it until a rolling update has replaced them, and the listener still
-- reads its payload. A later migration drops it.
