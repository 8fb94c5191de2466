-- name: create_agent
-- Register an agent with the digest of its API key; the id and timestamps are the server's.
INSERT INTO agents (agent_name, ip_address, port, api_key_digest)
VALUES (%(agent_name)s, %(ip_address)s, %(port)s, %(digest)s)
RETURNING id, agent_name, ip_address, port,
          rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at;

-- name: get_agent
-- One agent by id; no row means 404.
SELECT id, agent_name, ip_address, port,
       rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at
  FROM agents
 WHERE id = %(agent_id)s;

-- name: update_agent
-- Change the fields whose set_ flag is true; no row means 404.
UPDATE agents
   SET agent_name = CASE WHEN %(set_agent_name)s THEN %(agent_name)s ELSE agent_name END,
       ip_address = CASE WHEN %(set_ip_address)s THEN %(ip_address)s::inet ELSE ip_address END,
       port       = CASE WHEN %(set_port)s THEN %(port)s::integer ELSE port END,
       updated_at = clock_timestamp()
 WHERE id = %(agent_id)s
RETURNING id, agent_name, ip_address, port,
          rfc3339(created_at) AS created_at, rfc3339(updated_at) AS updated_at;
