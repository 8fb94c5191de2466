-- A retired agent receives nothing (migration 0021), checked once per statement instead
-- of once per row: a send to 1,000 recipients called the row trigger 1,000 times, about
-- a third of its statement's time (docs/performance.md, Push at scale). The statement's
-- new rows are read as a transition table; each row's agent is read by primary key (a
-- subquery per row, so the plan never scans agents whatever the transition table's size).
-- Same refusal, same constraint name, still before commit: a message committed in the
-- same instant as the retirement is delivered, as before.
CREATE FUNCTION refuse_retired_recipients() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    retired uuid;
BEGIN
    SELECT stored.recipient_id INTO retired
      FROM stored
     WHERE (SELECT agent.retired_at FROM agents agent
             WHERE agent.id = stored.recipient_id) IS NOT NULL
     LIMIT 1;
    IF FOUND THEN
        PERFORM refuse_retired(retired,
                               'Agent %s is retired and receives no messages (recipient_ids)');
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER message_recipients_not_retired ON message_recipients;
DROP FUNCTION refuse_retired_recipient();
CREATE TRIGGER message_recipients_not_retired AFTER INSERT ON message_recipients
    REFERENCING NEW TABLE AS stored
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_retired_recipients();
