"""The MCP endpoint at /mcp: the tools through which LLM agents use mailroom (docs/mcp.md)."""
