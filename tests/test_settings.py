"""Settings from the environment: defaults, the derived pool size, refusals."""

import os

import pytest

from settings import load_settings


def test_defaults_without_environment():
    settings = load_settings({})
    assert settings.database_url is None
    assert settings.port == 8000
    assert settings.workers == (os.cpu_count() or 1)
    assert (settings.pool_min_size, settings.pool_max_size) == (2, 10)
    assert settings.max_body_bytes == 1_048_576


@pytest.mark.parametrize(
    ("budget", "workers", "pool_max", "pool_min"),
    [("20", "4", 5, 2), ("40", "2", 20, 2), ("3", "4", 1, 1), ("1", "1", 1, 1)],
)
def test_pool_size_is_the_replica_share_split_between_workers(budget, workers, pool_max, pool_min):
    settings = load_settings({"MAILROOM_DB_CONNECTIONS": budget, "WEB_CONCURRENCY": workers})
    assert (settings.pool_max_size, settings.pool_min_size) == (pool_max, pool_min)


def test_an_explicit_pool_size_wins_over_the_share():
    settings = load_settings(
        {"MAILROOM_DB_CONNECTIONS": "20", "WEB_CONCURRENCY": "4", "MAILROOM_POOL_MAX_SIZE": "7"}
    )
    assert settings.pool_max_size == 7


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_a_bad_connection_share_names_the_variable(value):
    with pytest.raises(SystemExit, match="MAILROOM_DB_CONNECTIONS"):
        load_settings({"MAILROOM_DB_CONNECTIONS": value})
