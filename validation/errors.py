"""Invalid input, reported in the FastAPI shape clients of the original parse."""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from validation.responses import FieldError

# "Expected `int | null`, got `str` - at `$.port`": the path after "- at".
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_PATH_PART = re.compile(r"\.(\w+)|\[(\d+)\]|\[\.\.\.\]")
_FIELD = re.compile(r"field `(\w+)`")


class InvalidInput(Exception):
    """A request whose body, path or query is not acceptable (422)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(error.msg for error in errors))
        self.errors = list(errors)

    @classmethod
    def at(cls, loc: Sequence[str | int], msg: str, type: str = "value_error") -> InvalidInput:
        """One problem at one location, e.g. `InvalidInput.at(["path", "agent_id"], ...)`."""
        return cls([FieldError(type=type, loc=list(loc), msg=msg)])

    @classmethod
    def from_msgspec(cls, error: msgspec.MsgspecError, where: str = "body") -> InvalidInput:
        """Translate a msgspec decode or validation error on the request's `where`
        ("body", or "query" for a query string decoded into a Struct)."""
        if not isinstance(error, msgspec.ValidationError):
            return cls.at(["body"], f"Body is not valid JSON: {error}", "json_invalid")
        found = _AT.match(str(error))
        assert found is not None  # the pattern matches any text
        msg, path = found["msg"], found["path"] or "$"
        loc: list[str | int] = [where]
        for name, index in _PATH_PART.findall(path):
            if name:
                loc.append(name)
            elif index:
                loc.append(int(index))
        kind = "value_error"
        if msg.startswith("Object missing required field"):
            kind = "missing"
        elif msg.startswith("Object contains unknown field"):
            kind = "extra_forbidden"
        elif msg.startswith("Expected `") and ", got `" in msg:
            kind = "type_error"
        # A missing or unknown field is named in the message, not in the path.
        field = _FIELD.search(msg)
        if kind in ("missing", "extra_forbidden") and field:
            loc.append(field[1])
        return cls.at(loc, msg, kind)
