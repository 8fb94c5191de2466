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
