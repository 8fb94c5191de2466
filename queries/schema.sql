-- name: lock_migrations
-- Serialise start-up across replicas until this transaction ends.
SELECT pg_advisory_xact_lock(7265636575);

-- name: create_migrations_table
-- The record of which numbered migration files have been applied.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: list_migrations
-- Versions already applied.
SELECT version FROM schema_migrations ORDER BY version;

-- name: record_migration
-- Mark one migration file as applied.
INSERT INTO schema_migrations (version) VALUES (%(version)s);

-- name: seed_users
-- The original's three sample users, only into an empty table.
INSERT INTO users (id, name, email)
SELECT id, name, email
  FROM (VALUES (1, 'John Doe', 'john@example.com'),
               (2, 'Jane Smith', 'jane@example.com'),
               (3, 'Bob Johnson', 'bob@example.com')) AS sample (id, name, email)
 WHERE NOT EXISTS (SELECT 1 FROM users);

-- name: get_or_create_secret
-- A shared random secret by name; the first replica to ask stores its proposal.
WITH created AS (
    INSERT INTO service_secrets (name, value) VALUES (%(name)s, %(proposal)s)
    ON CONFLICT (name) DO NOTHING
    RETURNING value
)
SELECT value FROM created
 UNION ALL
SELECT value FROM service_secrets WHERE name = %(name)s;

-- name: database_exists
-- Whether the embedded server already has the mailroom database.
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'mailroom');

-- name: create_database
-- The embedded server's database, made on first start.
CREATE DATABASE mailroom;
