-- The agent directory (GET /agents, issue 13) pages through agents by their lower-cased
-- name in byte order, then id: the order of this index, which also serves a `?name=`
-- prefix as one range (under the "C" collation "starts with" is a contiguous range of
-- it). It replaces the index of 0004, by name, which a case-insensitive prefix could
-- only filter: a rare prefix read the whole index.
DROP INDEX agents_directory;
CREATE INDEX agents_by_lower_name ON agents ((lower(agent_name) COLLATE "C"), id);
