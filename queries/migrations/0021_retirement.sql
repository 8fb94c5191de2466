-- Retiring an agent (issue 15): DELETE /agents/{agent_id}, and ?purge=true. docs/lifecycle.md.

-- When the agent was retired; NULL while it is active. A retired agent's key is cleared,
-- it is not found by id, and every listing of agents (the directory, GET /agents) must
-- leave it out (WHERE retired_at IS NULL); its messages stay in the others' history.
ALTER TABLE agents ADD COLUMN retired_at timestamptz;

-- A purged agent's row is deleted: the messages it sent stay with their recipients and
-- show no sender, the conversations it started show no starter.
ALTER TABLE messages DROP CONSTRAINT messages_sender_id_fkey,
    ADD CONSTRAINT messages_sender_id_fkey
        FOREIGN KEY (sender_id) REFERENCES agents (id) ON DELETE SET NULL;
ALTER TABLE conversations DROP CONSTRAINT conversations_created_by_fkey,
    ADD CONSTRAINT conversations_created_by_fkey
        FOREIGN KEY (created_by) REFERENCES agents (id) ON DELETE SET NULL;

-- Nothing new reaches a retired agent, nor leaves as from it, whichever statement
-- stores the row (create_message, create_recipient): 409 naming the agent. The check
-- reads the agent's row by primary key; handlers/errors.py knows the constraint name.
CREATE FUNCTION refuse_retired(agent_id uuid, refusal text) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM agents WHERE id = agent_id AND retired_at IS NOT NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'agent_retired',
                              MESSAGE = format(refusal, agent_id);
    END IF;
END
$$;
CREATE FUNCTION refuse_retired_sender() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM refuse_retired(NEW.sender_id, 'Agent %s is retired and sends no messages (sender_id)');
    RETURN NEW;
END
$$;
CREATE FUNCTION refuse_retired_recipient() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM refuse_retired(NEW.recipient_id,
                           'Agent %s is retired and receives no messages (recipient_ids)');
    RETURN NEW;
END
$$;
CREATE TRIGGER messages_sender_not_retired BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION refuse_retired_sender();
CREATE TRIGGER message_recipients_not_retired BEFORE INSERT ON message_recipients
    FOR EACH ROW EXECUTE FUNCTION refuse_retired_recipient();

-- Tell every replica, at commit, that an agent was retired: its streams and long-polls end.
-- On the inbox channel, told apart from a new message by its first word.
CREATE FUNCTION notify_retired(agent_id uuid) RETURNS void
LANGUAGE sql
AS $$ SELECT pg_notify(inbox_channel(), concat_ws(' ', 'retired', agent_id)) $$;
