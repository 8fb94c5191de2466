"""Named SQL statements loaded from the .sql files in this folder.

Each file holds blocks that start with `-- name: <verb_noun>` followed by one
comment line saying what the statement is for, then the statement itself with
psycopg's `%(param)s` placeholders. The files are parsed once, at import, and
every statement runs with bound parameters only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

from psycopg import AsyncConnection, postgres
from psycopg.cursor import BaseCursor
from psycopg.rows import RowFactory, RowMaker

HERE = Path(__file__).parent
T = TypeVar("T")
NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
# timestamp and timestamptz: statements return text from rfc3339() instead.
TIMESTAMP_TYPES = frozenset({postgres.types["timestamp"].oid, postgres.types["timestamptz"].oid})


class Query:
    """One named statement; run it on a connection with keyword parameters.

    The cursors are client-side and not closed explicitly: closing one only frees
    its result, which dropping the last reference to it does as well, and the
    `async with` around it cost about 13 us of a 300 us GET /users/1.
    """

    __slots__ = ("checked", "doc", "name", "text")

    def __init__(self, name: str, text: str, doc: str) -> None:
        self.name = name
        self.text = text
        self.doc = doc
        self.checked: set[type] = set()

    def _rows(self, row: type[T]) -> RowFactory[T]:
        """Rows built positionally (fast), once checked against the Struct's field names
        and for timestamps not spelled by rfc3339() (they would reach clients unformatted)."""

        def factory(cursor: BaseCursor[Any, Any]) -> RowMaker[T]:
            if row not in self.checked and cursor.description is not None:
                columns = tuple(column.name for column in cursor.description)
                fields = getattr(row, "__struct_fields__", None)
                if columns != fields:
                    raise TypeError(f"{self.name} returns {columns}, {row.__name__} has {fields}")
                for column in cursor.description:
                    if column.type_code in TIMESTAMP_TYPES:
                        raise TypeError(
                            f"{self.name} returns {column.name} as a timestamp: select "
                            f"rfc3339({column.name}) AS {column.name} instead, the contract's "
                            "spelling (queries/migrations/0005_shared_definitions.sql)"
                        )
                self.checked.add(row)
            return lambda values: row(*values)

        return factory

    async def one(self, conn: AsyncConnection, row: type[T], **params: Any) -> T | None:
        """The first row as a `row` Struct, or None when there is none."""
        cur = conn.cursor(row_factory=self._rows(row))
        await cur.execute(self.text, params)
        return await cur.fetchone()

    async def all(
        self, conn: AsyncConnection, row: type[T], *, prepare: bool | None = None, **params: Any
    ) -> list[T]:
        """Every row as a `row` Struct. `prepare=False` keeps the statement from ever being
        prepared on the server, so each run is planned for its own values (no generic plan)."""
        cur = conn.cursor(row_factory=self._rows(row))
        await cur.execute(self.text, params, prepare=prepare)
        return await cur.fetchall()

    async def page(self, conn: AsyncConnection, row: type[T], **params: Any) -> list[tuple[T, int]]:
        """Every row as a `row` Struct paired with its last column, `page_bytes`: the
        size of the page up to it (handlers/pagination.py fit() reads it)."""

        def factory(cursor: BaseCursor[Any, Any]) -> RowMaker[tuple[T, int]]:
            if row not in self.checked and cursor.description is not None:
                columns = tuple(column.name for column in cursor.description)
                fields = (*getattr(row, "__struct_fields__", ()), "page_bytes")
                if columns != fields:
                    raise TypeError(
                        f"{self.name} returns {columns}, a page of {row.__name__} is {fields}"
                    )
                self.checked.add(row)
            return lambda values: (row(*values[:-1]), values[-1])

        cur = conn.cursor(row_factory=factory)
        await cur.execute(self.text, params)
        return await cur.fetchall()

    async def value(self, conn: AsyncConnection, **params: Any) -> Any:
        """The first column of the first row, or None when there is no row."""
        cur = conn.cursor()
        await cur.execute(self.text, params)
        found = await cur.fetchone()
        return None if found is None else found[0]

    async def column(self, conn: AsyncConnection, **params: Any) -> list[Any]:
        """The first column of every row."""
        cur = conn.cursor()
        await cur.execute(self.text, params)
        return [found[0] for found in await cur.fetchall()]

    async def run(self, conn: AsyncConnection, **params: Any) -> int:
        """Execute for effect; returns the number of rows affected."""
        cur = conn.cursor()
        await cur.execute(self.text, params)
        return cur.rowcount


class Queries:
    """Every named statement of every .sql file, as attributes."""

    def __init__(self, folder: Path = HERE) -> None:
        self._by_name: dict[str, Query] = {}
        for path in sorted(folder.glob("*.sql")):
            for query in parse(path.read_text(encoding="utf-8"), path.name):
                if query.name in self._by_name:
                    raise ValueError(f"{path.name}: query {query.name!r} is defined twice")
                self._by_name[query.name] = query
        self.__dict__.update(self._by_name)

    def __getattr__(self, name: str) -> Query:
        raise AttributeError(f"no SQL statement named {name!r} in {HERE}")

    def names(self) -> list[str]:
        return sorted(self._by_name)


def parse(source: str, filename: str) -> list[Query]:
    """Split one .sql file into its named statements."""
    parts = NAME_LINE.split(source)
    if parts[0].strip() and not all(
        line.startswith("--") or not line.strip() for line in parts[0].splitlines()
    ):
        raise ValueError(f"{filename}: SQL before the first '-- name:' line")
    queries = []
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = body.strip().splitlines()
        doc = " ".join(line.removeprefix("--").strip() for line in lines if line.startswith("--"))
        text = "\n".join(line for line in lines if not line.startswith("--")).strip()
        if not text:
            raise ValueError(f"{filename}: query {name!r} has no statement")
        if not doc:
            raise ValueError(f"{filename}: query {name!r} needs a comment saying what it is for")
        queries.append(Query(name, text.rstrip(";"), doc))
    return queries


sql = Queries()
