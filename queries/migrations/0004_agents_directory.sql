-- The agent directory (GET /agents) pages through agents by name then id.
CREATE INDEX agents_directory ON agents (agent_name, id);
