-- Definitions that several statements of queries/*.sql share, each written once here.

-- Every agent that sent or received each message: one row per (message, agent).
-- A view rather than a function, for the query plans: its two single-table arms
-- are flattened into an Append whose arms take index scans driven by the message
-- (messages_pkey, message_recipients_pkey) or by the agent (messages_by_sender,
-- message_recipients_mailbox). A scalar SQL function holding a subquery is never
-- inlined (the planner runs it row by row, blind to its indexes), and a
-- set-returning one filtered by agent keeps a WHERE in each arm, which stops that
-- flattening: the agent's whole mail is then read to check one message.
CREATE VIEW message_parties AS
SELECT id AS message_id, sender_id AS agent_id FROM messages
 UNION ALL
SELECT message_id, recipient_id FROM message_recipients;

-- The channel of new-message notifications: notify_inbox sends on it and every
-- replica's listener (queries/listener.py, listen_inbox) listens on it.
CREATE FUNCTION inbox_channel() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 'mailroom_inbox' $$;

-- Tell the listening replicas, at commit, that a recipient row was stored:
-- '<recipient_id> <sent_at in microseconds since the epoch> <message_id>'.
CREATE FUNCTION notify_inbox(recipient_id uuid, sent_at timestamptz, message_id uuid)
RETURNS void
LANGUAGE sql
AS $$
SELECT pg_notify(inbox_channel(), concat_ws(' ', recipient_id,
                 (extract(epoch FROM sent_at) * 1000000)::bigint, message_id))
$$;

-- A timestamp as the contract spells it: RFC 3339 in UTC with all six fractional
-- digits ('2026-11-28T19:20:01.120000Z'; PostgreSQL's own text drops trailing
-- zeros). Every statement returns its timestamps through it; NULL stays NULL.
-- One SELECT of an expression, STABLE like to_char: the planner inlines it.
CREATE FUNCTION rfc3339(moment timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;
