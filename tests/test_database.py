"""The database layer: DATABASE_URL forms, concurrent migrations, and the named-SQL loader."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import msgspec
import psycopg
import psycopg_pool
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from starlette.testclient import TestClient

import queries
from handlers.pagination import NEWEST, OLDEST
from queries import Queries, Query, parse, sql
from queries.database import MIGRATIONS, make_pool, migrate, normalise_url
from queries.params import array_literal
from settings import load_settings
from tests.helpers import temporary_database

SAMPLE_USERS = [
    {"id": 1, "name": "John Doe", "email": "john@example.com"},
    {"id": 2, "name": "Jane Smith", "email": "jane@example.com"},
    {"id": 3, "name": "Bob Johnson", "email": "bob@example.com"},
]
QUERIES_DIR = Path(queries.__file__).parent


def with_scheme(url: str, scheme: str, **query: str) -> str:
    """`url` spelled with another scheme and extra query parameters."""
    parts = urlsplit(url)
    merged = {**parse_qs(parts.query), **{k: [v] for k, v in query.items()}}
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(merged, doseq=True)))


# DATABASE_URL forms ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db.example:5432/app", "postgresql://u:p@db.example:5432/app"),
        ("postgres://u:p@db.example:5432/app", "postgresql://u:p@db.example:5432/app"),
        ("postgresql+asyncpg://u:p@db.example/app", "postgresql://u:p@db.example/app"),
        ("postgresql+psycopg://u:p@db.example/app", "postgresql://u:p@db.example/app"),
        (
            "postgresql+asyncpg://u@db.example/app?ssl=require",
            "postgresql://u@db.example/app?sslmode=require",
        ),
        (
            "postgres://u@db.example/app?sslmode=verify-full&application_name=x",
            "postgresql://u@db.example/app?sslmode=verify-full&application_name=x",
        ),
    ],
)
def test_normalise_url_accepts_the_contract_forms(given: str, expected: str) -> None:
    assert normalise_url(given) == expected
    assert conninfo_to_dict(normalise_url(given)) == conninfo_to_dict(expected)


def test_asyncpg_ssl_becomes_sslmode() -> None:
    params = conninfo_to_dict(normalise_url("postgresql+asyncpg://u@h/app?ssl=disable"))
    assert params["sslmode"] == "disable"
    assert "ssl" not in params


def test_explicit_sslmode_wins_over_ssl() -> None:
    url = normalise_url("postgresql+asyncpg://u@h/app?sslmode=require&ssl=disable")
    params = conninfo_to_dict(url)
    assert params["sslmode"] == "require"
    assert "ssl=" not in url.replace("sslmode=", "")


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:p@localhost/app",
        "sqlite:///app.db",
        "postgresql+mysql://u@h/app",
        "http://db.example/app",
        "",
        "db.example:5432/app",
    ],
)
def test_normalise_url_rejects_other_databases(url: str) -> None:
    with pytest.raises(ValueError, match="must start with"):
        normalise_url(url)


def test_settings_normalise_database_url() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql+asyncpg://u@h/a?ssl=require"})
    assert settings.database_url == "postgresql://u@h/a?sslmode=require"


def test_settings_refuse_mysql_naming_the_variable() -> None:
    with pytest.raises(SystemExit, match="DATABASE_URL"):
        load_settings({"DATABASE_URL": "mysql://u@h/app"})


@pytest.mark.parametrize(
    ("scheme", "query"),
    [
        ("postgres", {}),
        ("postgresql+psycopg", {}),
        ("postgresql+asyncpg", {"ssl": "disable"}),
    ],
)
def test_every_url_form_connects(database_url: str, scheme: str, query: dict[str, str]) -> None:
    url = normalise_url(with_scheme(database_url, scheme, **query))
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    assert row[0] == urlsplit(database_url).path.lstrip("/")


# Migrations -------------------------------------------------------------------------


@pytest.fixture
def fresh_url(database_url: str) -> Iterator[str]:
    """A second, empty database on the test server, dropped afterwards."""
    with temporary_database(database_url, "mailroom_migrate") as url:
        yield url


def snapshot(url: str) -> dict[str, Any]:
    """What migrations leave behind: versions (with times), users and secrets."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return {
            "migrations": conn.execute(
                "SELECT version, applied_at FROM schema_migrations ORDER BY version"
            ).fetchall(),
            "users": conn.execute("SELECT id, name, email FROM users ORDER BY id").fetchall(),
            "secrets": conn.execute(
                "SELECT name, value FROM service_secrets ORDER BY name"
            ).fetchall(),
        }


def test_concurrent_migrations_apply_each_version_once(fresh_url: str) -> None:
    async def five_at_once() -> list[bytes]:
        return await asyncio.gather(*(migrate(fresh_url, 10) for _ in range(5)))

    keys = asyncio.run(five_at_once())

    expected_versions = sorted(path.stem for path in MIGRATIONS.glob("*.sql"))
    assert expected_versions
    with psycopg.connect(fresh_url, autocommit=True, row_factory=dict_row) as conn:
        counts = conn.execute(
            "SELECT version, count(*) AS n FROM schema_migrations GROUP BY version ORDER BY version"
        ).fetchall()
        users = conn.execute("SELECT id, name, email FROM users ORDER BY id").fetchall()
        stored = conn.execute("SELECT value FROM service_secrets WHERE name = 'cursor'").fetchall()
    assert counts == [{"version": version, "n": 1} for version in expected_versions]
    assert users == SAMPLE_USERS
    assert len(set(keys)) == 1
    (key,) = set(keys)
    assert isinstance(key, bytes) and len(key) >= 16
    assert stored == [{"value": key}]


def test_migrating_again_changes_nothing(fresh_url: str) -> None:
    first_key = asyncio.run(migrate(fresh_url, 10))
    before = snapshot(fresh_url)
    again_key = asyncio.run(migrate(fresh_url, 10))
    assert again_key == first_key
    assert snapshot(fresh_url) == before
    assert before["users"] == SAMPLE_USERS


def test_migrate_keeps_existing_users_untouched(fresh_url: str) -> None:
    asyncio.run(migrate(fresh_url, 10))
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE id = 3")
    asyncio.run(migrate(fresh_url, 10))
    users = snapshot(fresh_url)["users"]
    assert users == SAMPLE_USERS[:2]


def test_the_test_database_was_migrated_once(database_url: str, client: TestClient) -> None:
    state = snapshot(database_url)
    versions = [row["version"] for row in state["migrations"]]
    assert versions == sorted(path.stem for path in MIGRATIONS.glob("*.sql"))
    assert [row["name"] for row in state["secrets"]] == ["cursor"]


def test_migrate_gives_up_on_an_unreachable_database() -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="cannot reach the database"):
        asyncio.run(migrate("postgresql://postgres@127.0.0.1:1/x", 1))
    assert time.monotonic() - started < 15


# The named-SQL loader -----------------------------------------------------------------


def test_parse_reads_name_comment_and_statement() -> None:
    source = (
        "-- A file comment before the first block is allowed.\n\n"
        "-- name: get_thing\n"
        "-- One thing by id.\n"
        "SELECT id FROM things WHERE id = %(thing_id)s;\n\n"
        "-- name: list_things\n"
        "-- Every thing,\n"
        "-- newest first.\n"
        "SELECT id\n  FROM things\n ORDER BY id DESC;\n"
    )
    first, second = parse(source, "things.sql")
    assert (first.name, first.doc) == ("get_thing", "One thing by id.")
    assert first.text == "SELECT id FROM things WHERE id = %(thing_id)s"
    assert (second.name, second.doc) == ("list_things", "Every thing, newest first.")
    assert second.text == "SELECT id\n  FROM things\n ORDER BY id DESC"


def test_parse_rejects_a_block_without_a_comment_line() -> None:
    with pytest.raises(ValueError, match=r"x\.sql.*get_thing.*comment"):
        parse("-- name: get_thing\nSELECT 1;\n", "x.sql")


def test_parse_rejects_a_block_without_a_statement() -> None:
    with pytest.raises(ValueError, match="no statement"):
        parse("-- name: get_thing\n-- Nothing here.\n", "x.sql")


def test_parse_rejects_sql_before_the_first_name() -> None:
    with pytest.raises(ValueError, match="before the first"):
        parse("SELECT 1;\n-- name: get_thing\n-- One.\nSELECT 2;\n", "x.sql")


def test_loader_rejects_a_name_used_twice_in_one_file(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text(
        "-- name: get_thing\n-- One.\nSELECT 1;\n\n-- name: get_thing\n-- Two.\nSELECT 2;\n"
    )
    with pytest.raises(ValueError, match=r"get_thing.*twice"):
        Queries(tmp_path)


def test_loader_rejects_a_name_used_in_two_files(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: get_thing\n-- One.\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("-- name: get_thing\n-- Two.\nSELECT 2;\n")
    with pytest.raises(ValueError, match=r"get_thing.*twice"):
        Queries(tmp_path)


def test_loader_rejects_a_file_with_a_block_without_comment(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: get_thing\nSELECT 1;\n")
    with pytest.raises(ValueError, match="comment"):
        Queries(tmp_path)


def test_every_statement_in_the_sql_files_loads() -> None:
    names_in_files = []
    for path in sorted(QUERIES_DIR.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        names_in_files += re.findall(r"^--\s*name:\s*(\w+)\s*$", text, re.MULTILINE)
        assert parse(text, path.name), path.name
    assert names_in_files
    assert len(names_in_files) == len(set(names_in_files))
    assert sql.names() == sorted(names_in_files)
    for name in names_in_files:
        query = getattr(sql, name)
        assert isinstance(query, Query)
        assert query.name == name
        assert query.doc, name
        assert query.text and not query.text.endswith(";"), name


def test_unknown_statement_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_statement"):
        _ = sql.no_such_statement


class _Clock(msgspec.Struct, frozen=True):
    """Row of the statements below."""

    at: str | None


def _read_clock(url: str, statement: str, **params: object) -> _Clock | None:
    """Run one statement through the named-SQL loader, as the handlers do, on a session
    whose time zone is not UTC."""
    (query,) = parse(f"-- name: get_clock\n-- An instant.\n{statement}\n", "clock.sql")

    async def run() -> _Clock | None:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, options="-c TimeZone=Asia/Kolkata"
        ) as conn:
            return await query.one(conn, _Clock, **params)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("instant", "spelled"),
    [
        ("2026-11-28 21:20:01+02", "2026-11-28T19:20:01.000000Z"),
        ("2026-11-28 19:20:01.12-00:30", "2026-11-28T19:50:01.120000Z"),
        (None, None),
    ],
)
def test_rfc3339_spells_an_instant_in_utc_with_six_digits(
    database_url: str, client: TestClient, instant: str | None, spelled: str | None
) -> None:
    """The one spelling of timestamps (migration 0005), whatever the session's time zone."""
    found = _read_clock(
        database_url, "SELECT rfc3339(%(instant)s::timestamptz) AS at;", instant=instant
    )
    assert found == _Clock(at=spelled)


def test_a_statement_returning_a_bare_timestamp_is_refused(database_url: str) -> None:
    """A timestamp not spelled by rfc3339() would reach clients in another format."""
    with pytest.raises(
        TypeError, match=r"get_clock returns at as a timestamp.*rfc3339\(at\) AS at"
    ):
        _read_clock(database_url, "SELECT now() AS at;")


# The pool --------------------------------------------------------------------------


def test_a_connection_given_back_inside_a_transaction_is_rolled_back(database_url: str) -> None:
    """pool.connection() puts the connection back without committing (queries/database.py):
    what a block left uncommitted, because it raised, is rolled back, never kept."""

    async def scenario() -> tuple[int, int, str]:
        pool = make_pool(database_url, 1, 1, 5, None)
        await pool.open(wait=True)
        try:
            with pytest.raises(RuntimeError):
                async with pool.connection() as conn:
                    await conn.execute("BEGIN")
                    await conn.execute("CREATE TEMPORARY TABLE left_behind (n int)")
                    raise RuntimeError("the handler failed")
            async with pool.connection() as again:  # the only connection of the pool
                same = again is conn
                cur = await again.execute(
                    "SELECT count(*) FROM pg_class WHERE relname = %s", ("left_behind",)
                )
                (count,) = await cur.fetchone()
                return int(same), count, again.info.transaction_status.name
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == (1, 0, "IDLE")


async def _backend(conn: psycopg.AsyncConnection) -> int:
    """The server process behind a pooled connection: which connection a borrower got."""
    return conn.info.backend_pid


def test_borrowers_past_the_pool_wait_in_turn_and_give_up_at_the_timeout(
    database_url: str,
) -> None:
    """With every connection lent, further borrowers queue at the pool's gate in arrival
    order (queries/database.py); each one gets the next connection given back, and one
    still waiting at the timeout gets PoolTimeout (the 503) and is counted as such."""

    async def scenario() -> dict[str, Any]:
        pool = make_pool(database_url, 2, 2, 0.5, None)
        await pool.open(wait=True)
        seen: dict[str, Any] = {"order": []}
        try:
            first, second = pool.connection(), pool.connection()
            held = [await first.__aenter__(), await second.__aenter__()]

            async def borrow(name: str) -> None:
                async with pool.connection() as conn:
                    seen["order"].append((name, await _backend(conn)))
                    await asyncio.sleep(0.05)

            waiters = [asyncio.create_task(borrow(name)) for name in ("b", "c", "d")]
            await asyncio.sleep(0.1)
            seen["waiting"] = pool.get_stats()["requests_waiting"]
            await first.__aexit__(None, None, None)  # b, then c (in turn), then d
            await asyncio.gather(*waiters)
            seen["freed"] = await _backend(held[0])
            third = pool.connection()
            await third.__aenter__()  # both lent again: e waits, then gives up
            late = asyncio.create_task(borrow("e"))
            await asyncio.sleep(0.1)
            seen["waiting_late"] = pool.get_stats()["requests_waiting"]
            started = time.monotonic()
            with pytest.raises(psycopg_pool.PoolTimeout):
                await late
            seen["gave_up_after"] = time.monotonic() - started
            await second.__aexit__(None, None, None)
            await third.__aexit__(None, None, None)
            stats = pool.get_stats()
            seen["errors"], seen["waiting_after"] = (
                stats["requests_errors"],
                stats["requests_waiting"],
            )
            both = [pool.connection(), pool.connection()]  # every turn is back
            seen["again"] = len({await _backend(await b.__aenter__()) for b in both})
            for b in both:
                await b.__aexit__(None, None, None)
        finally:
            await pool.close()
        return seen

    seen = asyncio.run(scenario())
    assert [name for name, _ in seen["order"]] == ["b", "c", "d"]
    assert {pid for _, pid in seen["order"]} == {seen["freed"]}  # the one connection given back
    assert seen["waiting"] == 3 and seen["waiting_late"] == 1 and seen["waiting_after"] == 0
    assert 0.25 < seen["gave_up_after"] < 1.0
    assert seen["errors"] == 1
    assert seen["again"] == 2


def test_a_borrower_cancelled_while_waiting_leaves_no_turn_behind(database_url: str) -> None:
    """A request that ends while queued for a connection (its client left) gives up its
    place; the pool can still lend every connection, at once, afterwards."""

    async def scenario() -> tuple[int, int, bool]:
        pool = make_pool(database_url, 1, 1, 5, None)
        await pool.open(wait=True)
        try:
            holder = pool.connection()
            await holder.__aenter__()

            async def borrow() -> None:
                async with pool.connection():
                    pass

            waiter = asyncio.create_task(borrow())
            await asyncio.sleep(0.05)
            waiting = pool.get_stats()["requests_waiting"]
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            await holder.__aexit__(None, None, None)
            after = pool.get_stats()["requests_waiting"]
            async with asyncio.timeout(1):  # the one connection, lent at once
                await borrow()
            return waiting, after, waiter.cancelled()
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == (1, 0, True)


def test_array_literals_round_trip_uuids_and_instants(database_url: str) -> None:
    """The wake-up reads pass their arrays as text (queries/params.py): every value,
    the microseconds and the far sort keys of an empty position included, comes back."""
    ids = [uuid.uuid4() for _ in range(3)] + [OLDEST[1], NEWEST[1]]
    instants = [
        datetime(2026, 11, 30, 16, 0, 1, 123456, tzinfo=UTC),
        datetime(2026, 11, 30, 16, 0, 1, tzinfo=UTC),
        datetime(2026, 11, 30, 17, 0, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        OLDEST[0],
        NEWEST[0],
    ]
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT %(ids)s::uuid[], %(instants)s::timestamptz[]",
            {"ids": array_literal(ids), "instants": array_literal(instants)},
        ).fetchone()
    assert found == (ids, instants)
