"""Schemathesis hooks of bench/fuzz.py: the stream's events read as OpenAPI 3.2 describes
them, and the refusals of schema-valid input that no schema can express."""

from __future__ import annotations

from typing import Any

import schemathesis

EVENT_STREAM = "text/event-stream"
# Opaque values, 422 unless the service issued (or, for a key, first saw) them: a cursor
# (`cursor`, the stream's `after` and Last-Event-ID) must come from a Link header or an
# event id, and an Idempotency-Key reused with another body is refused (API.md). A schema
# cannot say which strings those are, so a schema-valid one is refused all the same.
OPAQUE = {
    ("query", "cursor"),
    ("query", "after"),
    ("header", "last-event-id"),
    ("header", "idempotency-key"),
}
# A webhook_url is refused for where it points, which only resolving its host tells (an
# internal address, or a name that does not resolve: docs/webhooks.md); no schema can.
WHERE_IT_POINTS = {("body", "webhook_url")}
# An RFC 3339 date-time Python's datetime cannot hold (year 0000, February 30) is valid to
# the `date-time` format and still refused; a pattern able to say it would be unreadable.
IMPOSSIBLE_DATES = {("query", "since"), ("query", "until")}
# A search text with no word in it (only punctuation or control characters) is 422 by
# design (docs/search.md); which characters make a word is PostgreSQL's parser's call,
# which no JSON Schema pattern (Python's re has no \p{L}) can state.
NO_WORD = ("query", "q"), "The search has no word to look for"
POSITIVE_DATA_REFUSED = "ST202"  # the positive_data_acceptance check's failure code


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    """Validate every event of the stream, its JSON `data` included.

    The document is OpenAPI 3.1, where an event stream's `schema` describes the body
    text; it describes the events under `x-itemSchema`, OpenAPI 3.2's `itemSchema`,
    which schemathesis reads (and then takes `schema` for the whole stream).
    """
    for path_item in raw_schema["paths"].values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                media = response.get("content", {}).get(EVENT_STREAM)
                if media is not None and "x-itemSchema" in media:
                    media["itemSchema"] = media.pop("x-itemSchema")
                    del media["schema"]


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but a schema-valid request refused only for an opaque value,
    for where a webhook URL points, for a date no calendar has, or for a search text
    with no word."""
    if failure.code != POSITIVE_DATA_REFUSED or response.status_code != 422:
        return True
    detail = response.json()["detail"]
    # A location is (where, name): ["query", "cursor"]; a whole body is just ["body"].
    located = {tuple(str(part).lower() for part in error["loc"][:2]) for error in detail}
    if all(tuple(e["loc"]) == NO_WORD[0] and e["msg"].startswith(NO_WORD[1]) for e in detail):
        return False
    return not located <= OPAQUE | WHERE_IT_POINTS | IMPOSSIBLE_DATES
