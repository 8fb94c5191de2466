"""Invalid input, in the FastAPI shape and the pydantic words clients of the original read."""

from __future__ import annotations

import ast
import enum
import json
import re
from collections.abc import Mapping, Sequence
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from msgspec import UNSET, UnsetType

from validation.responses import FieldError

Loc = Sequence[str | int]

# pydantic-core's message for each error type this service reports, filled from the
# item's ctx; `{s}` is pydantic's plural ending. json_invalid's is FastAPI's own.
MESSAGES = {
    "missing": "Field required",
    "extra_forbidden": "Extra inputs are not permitted",
    "model_attributes_type": "Input should be a valid dictionary or object to extract fields from",
    "dict_type": "Input should be a valid dictionary",
    "list_type": "Input should be a valid list",
    "string_type": "Input should be a valid string",
    "string_too_short": "String should have at least {min_length} character{s}",
    "string_too_long": "String should have at most {max_length} character{s}",
    "string_pattern_mismatch": "String should match pattern '{pattern}'",
    "too_short": "{field_type} should have at least {min_length} item{s} after validation, "
    "not {actual_length}",
    "too_long": "{field_type} should have at most {max_length} item{s} after validation, "
    "not {actual_length}",
    "int_type": "Input should be a valid integer",
    "int_parsing": "Input should be a valid integer, unable to parse string as an integer",
    "int_from_float": "Input should be a valid integer, got a number with a fractional part",
    "float_type": "Input should be a valid number",
    "float_parsing": "Input should be a valid number, unable to parse string as a number",
    "bool_type": "Input should be a valid boolean",
    "bool_parsing": "Input should be a valid boolean, unable to interpret input",
    "greater_than": "Input should be greater than {gt}",
    "greater_than_equal": "Input should be greater than or equal to {ge}",
    "less_than": "Input should be less than {lt}",
    "less_than_equal": "Input should be less than or equal to {le}",
    "multiple_of": "Input should be a multiple of {multiple_of}",
    "literal_error": "Input should be {expected}",
    "enum": "Input should be {expected}",
    "uuid_type": "UUID input should be a string, bytes or UUID object",
    "uuid_parsing": "Input should be a valid UUID, {error}",
    "datetime_type": "Input should be a valid datetime",
    "datetime_parsing": "Input should be a valid datetime, {error}",
    "date_type": "Input should be a valid date",
    "date_parsing": "Input should be a valid date in the format YYYY-MM-DD, {error}",
    "time_type": "Input should be a valid time",
    "time_parsing": "Input should be in a valid time format, {error}",
    "time_delta_type": "Input should be a valid timedelta",
    "time_delta_parsing": "Input should be a valid timedelta, {error}",
    "timezone_aware": "Input should have timezone info",
    "timezone_naive": "Input should not have timezone info",
    "decimal_type": "Decimal input should be an integer, float, string or Decimal object",
    "decimal_parsing": "Input should be a valid decimal",
    "bytes_type": "Input should be a valid bytes",
    "none_required": "Input should be None",
    "json_invalid": "JSON decode error",
}
# The count whose plural `{s}` follows, per type.
_COUNTED = {
    "string_too_short": "min_length",
    "string_too_long": "max_length",
    "too_short": "min_length",
    "too_long": "max_length",
}

# "Expected `int | null`, got `str` - at `$.port`": the path after "- at".
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_PATH_PART = re.compile(r"\.(\w+)|\[(\d+)\]|\[\.\.\.\]")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]*)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]*)`")
_WRONG_TYPE = re.compile(r"Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`")
_BOUND = re.compile(r"Expected `(?:int|float)` (?P<op>>=|>|<=|<) (?P<bound>\S+)")
_LENGTH = re.compile(r"Expected `(?P<kind>str|array|object)` of length (?P<op>>=|<=) (?P<n>\d+)")
_MULTIPLE = re.compile(r"Expected `int` that's a multiple of (?P<n>-?\d+)")
_PATTERN = re.compile(r"Expected `str` matching regex (?P<pattern>.+)", re.DOTALL)
_TIMEZONE = re.compile(r"Expected `(?:datetime|time)` with (?P<which>a|no) timezone component")
_CHOICE = re.compile(r"Invalid (?:enum )?value .*", re.DOTALL)

_BOUNDS = {
    ">=": ("greater_than_equal", "ge"),
    ">": ("greater_than", "gt"),
    "<=": ("less_than_equal", "le"),
    "<": ("less_than", "lt"),
}
# msgspec's name of the expected type -> pydantic's error type for a JSON value of
# another type, and for text (path, query) that does not parse as that type.
_WRONG_TYPES = {
    "int": ("int_type", "int_parsing"),
    "float": ("float_type", "float_parsing"),
    "bool": ("bool_type", "bool_parsing"),
    "str": ("string_type", "string_type"),
    "uuid": ("uuid_type", "uuid_type"),
    "datetime": ("datetime_type", "datetime_type"),
    "date": ("date_type", "date_type"),
    "time": ("time_type", "time_type"),
    "duration": ("time_delta_type", "time_delta_type"),
    "decimal": ("decimal_type", "decimal_type"),
    "bytes": ("bytes_type", "bytes_type"),
    "array": ("list_type", "list_type"),
    "object": ("dict_type", "dict_type"),
    "null": ("none_required", "none_required"),
}
# msgspec's sentence for text that does not parse -> pydantic's type and its ctx.error.
_UNPARSABLE = {
    "Invalid RFC3339 encoded datetime": (
        "datetime_parsing",
        "expected RFC 3339 such as 2026-01-31T12:00:00Z",
    ),
    "Invalid RFC3339 encoded date": ("date_parsing", "expected RFC 3339 such as 2026-01-31"),
    "Invalid RFC3339 encoded time": ("time_parsing", "expected RFC 3339 such as 12:00:00Z"),
    "Invalid ISO8601 duration": ("time_delta_parsing", "expected ISO 8601 such as P1DT2H"),
}
_UUID_GROUPS = (8, 4, 4, 4, 12)
_HEX = frozenset("0123456789abcdefABCDEF")
_CANONICAL_UUID = "expected the hyphenated 8-4-4-4-12 form"


def field_error(
    type: str, loc: Loc, ctx: dict[str, Any] | None = None, input: Any = UNSET
) -> FieldError:
    """One item in pydantic's words: `type` is a key of MESSAGES, `ctx` fills its message."""
    values = dict(ctx or {})
    if type in _COUNTED:
        values["s"] = "" if values[_COUNTED[type]] == 1 else "s"
    words = {name: _number(value) for name, value in values.items()}
    return FieldError(
        type=type,
        loc=list(loc),
        msg=MESSAGES[type].format(**words),
        input=input,
        ctx=ctx if ctx else UNSET,
    )


def uuid_problem(text: str) -> str:
    """What is wrong with a UUID text, worded as pydantic's ctx.error words it."""
    for position, char in enumerate(text):
        if char not in _HEX and char != "-":
            return f"invalid character: found `{char}` at {position}"
    if "-" not in text:
        # msgspec takes 32 bare digits; a path id must be the canonical form.
        return f"invalid length: found {len(text)}" if len(text) != 32 else _CANONICAL_UUID
    groups = text.split("-")
    if len(groups) != len(_UUID_GROUPS):
        return f"invalid group count: expected {len(_UUID_GROUPS)}, found {len(groups)}"
    for index, (group, expected) in enumerate(zip(groups, _UUID_GROUPS, strict=True)):
        if len(group) != expected:
            return f"invalid group length in group {index}: expected {expected}, found {len(group)}"
    return _CANONICAL_UUID


class InvalidInput(Exception):
    """A request whose body, path or query is not acceptable (422)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(error.msg for error in errors))
        self.errors = list(errors)

    @classmethod
    def at(cls, loc: Loc, msg: str, type: str = "value_error") -> InvalidInput:
        """One problem at one location, in this service's words (no pydantic type fits)."""
        return cls([FieldError(type=type, loc=list(loc), msg=msg)])

    @classmethod
    def pydantic(
        cls, type: str, loc: Loc, ctx: dict[str, Any] | None = None, input: Any = UNSET
    ) -> InvalidInput:
        """One problem in pydantic's words, e.g. `pydantic("int_parsing", ["query", "limit"])`."""
        return cls([field_error(type, loc, ctx, input)])

    @classmethod
    def from_msgspec(
        cls,
        error: msgspec.MsgspecError,
        where: str | Loc = "body",
        given: Any = UNSET,
        kind: Any = None,
    ) -> InvalidInput:
        """Translate a msgspec error into pydantic's type, msg and ctx where one fits.

        `where` prefixes the location: "body", "query" (so `$.limit` is
        ["query", "limit"]), or a whole location for a single value. `given` is
        what was decoded: a body's bytes, or the str mapping of a query; with it
        the item carries the refused `input`, and invalid JSON is located by
        character as FastAPI does. `kind` is the type decoded into; with it an
        invalid choice names the allowed values.
        """
        prefix: list[str | int] = [where] if isinstance(where, str) else list(where)
        if not isinstance(error, msgspec.ValidationError):
            return cls([_not_json(error, prefix, given)])
        return cls([_translate(error, prefix, given, kind)])


def _not_json(error: msgspec.MsgspecError, prefix: list[str | int], given: Any) -> FieldError:
    """A body that does not parse, located and worded as FastAPI's json.loads reports it."""
    if given == b"":
        # FastAPI reads an empty body as no body: the required body is missing.
        return field_error("missing", prefix, input=None)
    if isinstance(given, bytes | str):
        try:
            json.loads(given)
        except json.JSONDecodeError as problem:
            return field_error("json_invalid", [*prefix, problem.pos], {"error": problem.msg})
        except (ValueError, RecursionError):
            pass  # not text, or too deep for Python's parser: msgspec's words below
    return field_error("json_invalid", prefix, {"error": str(error)})


def _translate(
    error: msgspec.ValidationError, prefix: list[str | int], given: Any, kind: Any
) -> FieldError:
    """One validation error as pydantic reports the same cause, or msgspec's words."""
    found = _AT.match(str(error))
    assert found is not None  # the pattern matches any text
    msg, path = found["msg"], found["path"] or "$"
    steps: list[str | int] = []
    for name, index in _PATH_PART.findall(path):
        if name:
            steps.append(name)
        elif index:
            steps.append(int(index))
    loc = [*prefix, *steps]
    # Path, query and header values arrive as text; a JSON body has typed values.
    text = bool(prefix) and prefix[0] != "body"
    # msgspec does not name the key inside a dict (`$.tags[...]`): the value is unknown.
    value = UNSET if "[...]" in path else _lookup(_document(given), steps)

    if match := _MISSING.fullmatch(msg):
        # pydantic reports the object the field is missing from; FastAPI null for a parameter.
        return field_error("missing", [*loc, match["field"]], input=None if text else value)
    if match := _UNKNOWN.fullmatch(msg):
        field = match["field"]
        extra = value.get(field, UNSET) if isinstance(value, dict) else UNSET
        return field_error("extra_forbidden", [*loc, field], input=extra)
    if match := _WRONG_TYPE.fullmatch(msg):
        expected = [name for name in match["expected"].split(" | ") if name != "null"]
        got = match["got"]
        if len(expected) == 1 and expected[0] in _WRONG_TYPES:
            name = expected[0]
            as_json, as_text = _WRONG_TYPES[name]
            type = as_text if text and got == "str" else as_json
            if name == "object" and not steps and len(prefix) == 1:
                type = "model_attributes_type"  # the body itself is not an object
            elif type == "int_type" and isinstance(value, float) and not value.is_integer():
                type = "int_from_float"
            return field_error(type, loc, input=value)
    elif match := _BOUND.fullmatch(msg):
        type, key = _BOUNDS[match["op"]]
        bound = match["bound"]
        number = int(bound) if bound.lstrip("-").isdigit() else float(bound)
        return field_error(type, loc, {key: number}, value)
    elif match := _LENGTH.fullmatch(msg):
        longest = match["op"] == "<="
        key = "max_length" if longest else "min_length"
        limit = int(match["n"])
        if match["kind"] == "str":
            type = "string_too_long" if longest else "string_too_short"
            return field_error(type, loc, {key: limit}, value)
        if isinstance(value, list | dict):
            # pydantic's message names the length found, which needs the input.
            ctx = {
                "field_type": "List" if isinstance(value, list) else "Dictionary",
                key: limit,
                "actual_length": len(value),
            }
            return field_error("too_long" if longest else "too_short", loc, ctx, value)
    elif match := _MULTIPLE.fullmatch(msg):
        return field_error("multiple_of", loc, {"multiple_of": int(match["n"])}, value)
    elif match := _PATTERN.fullmatch(msg):
        pattern = ast.literal_eval(match["pattern"])  # msgspec shows the pattern's repr
        return field_error("string_pattern_mismatch", loc, {"pattern": pattern}, value)
    elif match := _TIMEZONE.fullmatch(msg):
        type = "timezone_aware" if match["which"] == "a" else "timezone_naive"
        return field_error(type, loc, input=value)
    elif msg == "Invalid UUID":
        problem = uuid_problem(value) if isinstance(value, str) else "invalid UUID text"
        return field_error("uuid_parsing", loc, {"error": problem}, value)
    elif msg in _UNPARSABLE:
        type, problem = _UNPARSABLE[msg]
        return field_error(type, loc, {"error": problem}, value)
    elif msg == "Invalid decimal string":
        return field_error("decimal_parsing", loc, input=value)
    elif _CHOICE.fullmatch(msg) and (choice := _choices(kind, steps)):
        type, choices = choice
        expected = expected_choices(choices)
        return field_error(type, loc, {"expected": expected}, value)
    # No pydantic type says the same (a number too large to represent, one of
    # several types): msgspec's sentence as it is.
    return FieldError(
        type="type_error" if _WRONG_TYPE.fullmatch(msg) else "value_error", loc=loc, msg=msg
    )


def _document(given: Any) -> Any:
    """The decoded input the error is about, or UNSET when it is not at hand."""
    if not isinstance(given, bytes):
        return given
    try:
        return msgspec.json.decode(given)
    except (msgspec.DecodeError, RecursionError):
        return UNSET


def _lookup(document: Any, steps: Sequence[str | int]) -> Any:
    """The value at `steps` inside `document`, or UNSET."""
    for step in steps:
        if isinstance(step, str) and isinstance(document, Mapping):
            document = document.get(step, UNSET)
        elif isinstance(step, int) and isinstance(document, list) and step < len(document):
            document = document[step]
        else:
            return UNSET
    return document


def _choices(kind: Any, steps: Sequence[str | int]) -> tuple[str, list[Any]] | None:
    """The error type and allowed values of the Literal or Enum at `steps` in `kind`.

    Read from the annotations, not msgspec.inspect: that sorts a Literal's values,
    and pydantic lists them in the order they are declared.
    """
    node = _unwrap(kind)
    for step in steps:
        if isinstance(node, type) and issubclass(node, msgspec.Struct):
            fields = {field.encode_name: field.type for field in msgspec.structs.fields(node)}
            node = _unwrap(fields.get(step)) if isinstance(step, str) else None
        elif get_origin(node) is list and isinstance(step, int):
            node = _unwrap(get_args(node)[0])
        else:
            return None
    if get_origin(node) is Literal:
        return "literal_error", list(get_args(node))
    if isinstance(node, type) and issubclass(node, enum.Enum):
        return "enum", [member.value for member in node]
    return None


def _unwrap(node: Any) -> Any:
    """The type inside Annotated[...] and an optional `X | None`; None for other unions."""
    while True:
        origin = get_origin(node)
        if origin is Annotated:
            node = get_args(node)[0]
        elif origin in (Union, UnionType):
            options = [a for a in get_args(node) if a not in (NoneType, UnsetType)]
            if len(options) != 1:
                return None
            node = options[0]
        else:
            return node


def expected_choices(choices: Sequence[Any]) -> str:
    """pydantic's list of allowed values: "'a', 'b' or 'c'"."""
    shown = [repr(choice) for choice in choices]
    if len(shown) == 1:
        return shown[0]
    return f"{', '.join(shown[:-1])} or {shown[-1]}"


def _number(value: Any) -> Any:
    """A bound as pydantic writes it in a message: 1.0 as 1."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
