"""The MCP server of /mcp: tools/list and tools/call over the official SDK's low-level Server.

tools/call decodes the arguments into the tool's Struct, runs the tool (which
runs operations of the table: tools/calls.py), and answers the REST JSON as
structured content beside a short text. A refusal a model can act on (bad
argument, unknown recipient, forbidden conversation, rate limit) is a tool
result with isError and a sentence saying what to fix; an unknown tool is
the protocol's invalid-params error. Each call is one log line and counted
in /metrics, by tool and outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import mcp_types as types
import msgspec
from mcp.server import Server
from mcp.shared.exceptions import MCPError

from access.authentication import principal
from handlers.operation import Operation
from operations import metrics
from operations.logs import REQUEST_LINES, RequestLines
from operations.middleware import SCOPE_KEY as REQUEST_ID
from operations.middleware import ExceptionHandler
from tools.calls import Calls, ToolFailure, arguments_error
from tools.catalog import TOOLS, Arguments, Tool
from validation.errors import InvalidInput

log = logging.getLogger(RequestLines.ACCESS)

INSTRUCTIONS = (
    "mailroom is a mailbox shared by AI agents. Call whoami to learn your agent id, "
    "list_agents to find the id of an agent to write to, send_message to write, and "
    "check_inbox (with wait_seconds to wait for an answer) then mark_read to read."
)
# An error's status, as the outcome label of the tool call's log line and counter.
OUTCOMES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}
UNKNOWN_TOOL = "unknown"  # the tool label of a call naming no tool: names are not labels


def input_schema(arguments: type[Arguments]) -> dict[str, Any]:
    """The JSON Schema of a tool's arguments, inline (no $ref), from its Struct."""
    (_,), components = msgspec.json.schema_components([arguments])
    schema = dict(components[arguments.__name__])
    schema.pop("title", None)
    schema.pop("description", None)  # the tool's own description says it
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def listing(tools: list[Tool]) -> types.ListToolsResult:
    """The answer of tools/list, built once: names, descriptions, schemas and hints."""
    return types.ListToolsResult(
        tools=[
            types.Tool(
                name=tool.name,
                description=tool.description,
                input_schema=input_schema(tool.arguments),
                annotations=types.ToolAnnotations(
                    read_only_hint=tool.read_only,
                    destructive_hint=False,
                    open_world_hint=False,
                ),
            )
            for tool in tools
        ]
    )


def record(request_id: str | None, tool: str, who: str, outcome: str, seconds: float) -> None:
    """The tool call's log line (no arguments, no content) and its counters."""
    metrics.TOOL_CALLS.labels(tool, outcome).inc()
    metrics.TOOL_LATENCY.labels(tool).observe(seconds)
    if log.isEnabledFor(logging.INFO):
        duration_ms = round(seconds * 1000, 2)
        REQUEST_LINES.add_event(
            request_id or "-",
            f"tool {tool} {outcome} {duration_ms:.2f} ms",
            {"tool": tool, "principal": who, "outcome": outcome, "duration_ms": duration_ms},
        )


def build(
    operations: list[Operation], exception_handlers: Mapping[type[Exception], ExceptionHandler]
) -> Server:
    """The SDK server whose tools run `operations`, errors mapped by `exception_handlers`."""
    calls = Calls(operations, exception_handlers)
    tools = {tool.name: tool for tool in TOOLS}
    listed = listing(TOOLS)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return listed

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        request = ctx.request
        request_id = request.scope.get(REQUEST_ID)
        started = time.perf_counter()
        tool = tools.get(params.name)
        if tool is None:
            record(request_id, UNKNOWN_TOOL, principal(request), "unknown_tool", 0.0)
            raise MCPError(
                types.INVALID_PARAMS,
                f"Unknown tool {params.name!r}; the tools are: {', '.join(tools)}",
            )
        outcome = "error"
        try:
            try:
                arguments = msgspec.convert(params.arguments or {}, tool.arguments)
            except msgspec.ValidationError as error:
                given = params.arguments or {}
                invalid = InvalidInput.from_msgspec(error, "arguments", given, tool.arguments)
                raise arguments_error(invalid) from None
            result = await tool.function(calls, request, arguments)
            outcome = "ok"
        except Exception as error:  # every failure is a result the model reads, never a 500
            failure = (
                error if isinstance(error, ToolFailure) else await calls.failure(request, error)
            )
            outcome = OUTCOMES.get(failure.status, "error")
            return types.CallToolResult(
                content=[types.TextContent(text=failure.text)], is_error=True
            )
        finally:
            record(
                request_id, tool.name, principal(request), outcome, time.perf_counter() - started
            )
        return types.CallToolResult(
            content=[types.TextContent(text=result.text)],
            structured_content=result.structured,
        )

    server: Server[Any] = Server(
        "mailroom",
        version="0.1.0",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    # mailroom's own middleware logs and counts each request and tool call; the SDK's
    # OpenTelemetry span per message would be a second, unexported account of the same.
    server.middleware = []
    return server
