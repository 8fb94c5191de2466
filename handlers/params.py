"""Path and query parameters: decoded and checked, or 422 naming the parameter."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

import msgspec
from starlette.requests import Request

from validation.errors import InvalidInput, uuid_problem
from validation.query_params import Query

_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def path_uuid(request: Request, name: str) -> UUID:
    """A UUID path parameter, or 422 naming it."""
    raw = request.path_params[name]
    # Only the canonical 8-4-4-4-12 spelling: Python's UUID() would also take
    # braces, a urn: prefix or hyphens anywhere.
    if not _UUID_TEXT.fullmatch(raw):
        raise InvalidInput.pydantic(
            "uuid_parsing", ["path", name], {"error": uuid_problem(raw)}, raw
        )
    return UUID(raw)


def path_int(request: Request, name: str) -> int:
    """An integer path parameter, or 422 naming it."""
    raw = request.path_params[name]
    text = raw.removeprefix("-")
    if not (text.isascii() and text.isdigit()):
        raise InvalidInput.pydantic("int_parsing", ["path", name], input=raw)
    if len(text) > 18:
        raise InvalidInput.at(["path", name], f"Not a valid integer: {raw!r}", "int_parsing")
    return int(raw)


Q = TypeVar("Q", bound=Query)
_INTEGER = re.compile(r"-?[0-9]+")
_PAST_ANY_BOUND = 10**18  # what a longer number is read as: int() of a long text is slow
_BOOLEANS = {"true": True, "false": False}
# Struct -> {field: the text converter of its type}, made once per Struct.
_CONVERTERS: dict[type, dict[str, Callable[[str], object]]] = {}


def _integer(text: str) -> int | str:
    if not (text.isascii() and _INTEGER.fullmatch(text)):
        return text
    if len(text.removeprefix("-")) > 18:
        return -_PAST_ANY_BOUND if text.startswith("-") else _PAST_ANY_BOUND
    return int(text)


def _unwrapped(kind: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """The type under `X | None` and its Meta."""
    if isinstance(kind, msgspec.inspect.UnionType):
        kind = next(t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType))
    return kind.type if isinstance(kind, msgspec.inspect.Metadata) else kind


def _converters(kind: type[Query]) -> dict[str, Callable[[str], object]]:
    """How each field's text becomes a value msgspec then validates.

    Stricter than msgspec's own str conversion: an integer is plain ASCII digits
    (not 1e2 or 2.0), a boolean is true or false (not 1 or True). Text that is
    neither stays text, which msgspec refuses with the field's location.
    """
    found = _CONVERTERS.get(kind)
    if found is None:
        found = {}
        info = msgspec.inspect.type_info(kind)
        assert isinstance(info, msgspec.inspect.StructType)
        for field in info.fields:
            base = _unwrapped(field.type)
            if isinstance(base, msgspec.inspect.IntType):
                found[field.name] = _integer
            elif isinstance(base, msgspec.inspect.BoolType):
                found[field.name] = lambda t: _BOOLEANS.get(t, t)
            else:
                found[field.name] = str
        _CONVERTERS[kind] = found
    return found


def query(request: Request, kind: type[Q]) -> Q:
    """The request's query string as `kind`, or 422 at ["query", name]."""
    converters = _converters(kind)
    params = request.query_params
    values = {name: convert(params[name]) for name, convert in converters.items() if name in params}
    try:
        return msgspec.convert(values, kind)
    except msgspec.ValidationError as error:
        raise InvalidInput.from_msgspec(error, "query", dict(params), kind) from None
