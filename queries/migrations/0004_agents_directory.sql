-- The agent directory (GET /agents) pages through agents by their lower-cased name in
-- byte order, then id: the order of this index, which also serves a `?name=` prefix as a
-- range (the "C" collation makes "starts with" a contiguous range of the index).
CREATE INDEX agents_directory ON agents ((lower(agent_name) COLLATE "C"), id);
