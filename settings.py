"""Settings: every environment variable mailroom reads, its bounds and its meaning, once.

Each field of `Settings` names its variable, its bounds (msgspec `Meta`
constraints, checked by msgspec when the values are converted) and its help
text; docs/configuration.md lists the same variables and a test holds the two
together. `load_settings` reads the environment once; a bad value stops
start-up with a message naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from operations import forwarded
from queries.database import normalise_url


def _env(variable: str, help: str, **bounds: Any) -> Meta:
    """The Meta of a setting: its bounds, its help text and the variable that sets it."""
    return Meta(description=help, extra={"env": variable}, **bounds)


# The Standard Webhooks schedule: the first attempt at once, then retries after 5 s,
# 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h (each with jitter).
WEBHOOK_RETRY_SCHEDULE = (
    0.0,
    5.0,
    300.0,
    1800.0,
    7200.0,
    18000.0,
    36000.0,
    50400.0,
    72000.0,
    86400.0,
)
LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]
LogFormat = Literal["json", "text"]
Seconds = float


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything configurable, read once from the environment (docs/configuration.md)."""

    database_url: (
        Annotated[
            str,
            _env(
                "DATABASE_URL", "PostgreSQL URL; unset: the embedded server (`uv run service.py`)"
            ),
        ]
        | None
    ) = None
    data_dir: Annotated[
        str, _env("MAILROOM_DATA_DIR", "Data directory of the embedded PostgreSQL")
    ] = ".mailroom/pgdata"
    host: Annotated[str, _env("HOST", "Address to listen on")] = "0.0.0.0"  # noqa: S104 - a container listens on all interfaces
    port: Annotated[int, _env("PORT", "TCP port to listen on", ge=1, le=65535)] = 8000
    workers: Annotated[
        int, _env("WEB_CONCURRENCY", "Worker processes (default: one per core)", ge=1, le=256)
    ] = os.cpu_count() or 1
    log_level: Annotated[LogLevel, _env("LOG_LEVEL", "Lowest level logged")] = "INFO"
    log_format: Annotated[LogFormat, _env("LOG_FORMAT", "json (one object per line) or text")] = (
        "text"
    )
    metrics_token: (
        Annotated[
            str,
            _env(
                "METRICS_TOKEN",
                "Bearer token a scraper sends to GET /metrics (also METRICS_TOKEN_FILE)",
            ),
        ]
        | None
    ) = None
    pool_min_size: Annotated[
        int, _env("MAILROOM_POOL_MIN_SIZE", "Connections each worker keeps open", ge=0)
    ] = 2
    pool_max_size: Annotated[
        int, _env("MAILROOM_POOL_MAX_SIZE", "Most connections one worker opens", ge=1)
    ] = 10
    db_connections: (
        Annotated[
            int,
            _env(
                "MAILROOM_DB_CONNECTIONS",
                "This replica's share of max_connections, split between its workers",
                ge=1,
            ),
        ]
        | None
    ) = None
    pool_timeout: Annotated[
        Seconds,
        _env("MAILROOM_POOL_TIMEOUT", "Seconds to wait for a free connection, then 503", gt=0),
    ] = 5.0
    prepare_threshold: (
        Annotated[
            int,
            _env(
                "MAILROOM_PREPARE_THRESHOLD",
                "Executions before a statement is prepared; off for PgBouncer < 1.21",
                ge=0,
            ),
        ]
        | None
    ) = 5
    startup_timeout: Annotated[
        Seconds,
        _env("MAILROOM_STARTUP_TIMEOUT", "Seconds to wait for the database at start-up", gt=0),
    ] = 30.0
    health_timeout: Annotated[
        Seconds, _env("MAILROOM_HEALTH_TIMEOUT", "Seconds GET /health waits for the database", gt=0)
    ] = 2.0
    echo_timeout: Annotated[
        Seconds, _env("MAILROOM_ECHO_TIMEOUT", "Seconds /cli/echo's command may run", gt=0)
    ] = 5.0
    echo_output_limit: Annotated[
        int, _env("MAILROOM_ECHO_OUTPUT_LIMIT", "Bytes of echo output kept", ge=1)
    ] = 65536
    max_body_bytes: Annotated[
        int, _env("MAILROOM_MAX_BODY_BYTES", "Largest request body, in bytes; more is 413", ge=1)
    ] = 1_048_576
    max_response_bytes: Annotated[
        int,
        _env(
            "MAILROOM_MAX_RESPONSE_BYTES",
            "Bytes of content and metadata a page holds before it stops early (Link continues)",
            ge=1024,
        ),
    ] = 4_194_304
    max_metadata_items: Annotated[
        int,
        _env("MAILROOM_MAX_METADATA_ITEMS", "Metadata items one message holds; more is 409", ge=1),
    ] = 100
    max_metadata_bytes: Annotated[
        int,
        _env(
            "MAILROOM_MAX_METADATA_BYTES",
            "Bytes of keys and values one message's metadata items hold; more is 409",
            ge=1024,
        ),
    ] = 1_048_576
    stream_heartbeat: Annotated[
        Seconds,
        _env("MAILROOM_STREAM_HEARTBEAT", "Seconds between heartbeats on an idle stream", gt=0),
    ] = 15.0
    reconnect_interval: Annotated[
        Seconds,
        _env(
            "MAILROOM_RECONNECT_INTERVAL",
            "Seconds between the listener's reconnection attempts",
            gt=0,
        ),
    ] = 0.5
    db_check_interval: Annotated[
        Seconds,
        _env(
            "MAILROOM_DB_CHECK_INTERVAL",
            "Seconds between the listener's checks that the database answers",
            gt=0,
        ),
    ] = 5.0
    auth_required: Annotated[
        bool, _env("MAILROOM_AUTH", "required: every non-public route needs a key; off: none")
    ] = True
    admin_token: (
        Annotated[
            str,
            _env(
                "MAILROOM_ADMIN_TOKEN",
                "The operator's key (also MAILROOM_ADMIN_TOKEN_FILE); the embedded setup makes one",
            ),
        ]
        | None
    ) = None
    auth_failure_limit: Annotated[
        int,
        _env(
            "MAILROOM_AUTH_FAILURE_LIMIT",
            "Failed authentications per client address a minute, then 429; 0 is no limit",
            ge=0,
        ),
    ] = 120
    write_rate_limit: Annotated[
        int,
        _env("MAILROOM_WRITE_RATE_LIMIT", "POST/PUT per agent key a minute; 0 is no limit", ge=0),
    ] = 600
    recipient_rate_limit: Annotated[
        int,
        _env(
            "MAILROOM_RECIPIENT_RATE_LIMIT",
            "Recipients per agent key a minute, of messages and added later; 0 is no limit",
            ge=0,
        ),
    ] = 6000
    echo_rate_limit: Annotated[
        int,
        _env("MAILROOM_ECHO_RATE_LIMIT", "/cli/echo per agent key a minute; 0 is no limit", ge=0),
    ] = 60
    echo_concurrency: Annotated[
        int,
        _env("MAILROOM_ECHO_CONCURRENCY", "echo commands one worker runs at once", ge=1),
    ] = 4
    waits_per_agent: Annotated[
        int,
        _env(
            "MAILROOM_WAITS_PER_AGENT",
            "Streams and long-polls one agent key holds open per worker",
            ge=1,
        ),
    ] = 8
    statement_timeout: (
        Annotated[
            Seconds,
            _env(
                "MAILROOM_STATEMENT_TIMEOUT",
                "Seconds one SQL statement may run; off for PgBouncer (set it on the role)",
                ge=0.001,
            ),
        ]
        | None
    ) = 10.0
    retention_days: (
        Annotated[
            int,
            _env(
                "MAILROOM_RETENTION_DAYS",
                "Days a message is kept, then deleted with its recipients and metadata",
                ge=1,
                le=36500,
            ),
        ]
        | None
    ) = None
    retention_batch: Annotated[
        int,
        _env(
            "MAILROOM_RETENTION_BATCH",
            "Messages the retention job deletes per transaction",
            ge=1,
            le=10000,
        ),
    ] = 500
    retention_interval: Annotated[
        Seconds,
        _env(
            "MAILROOM_RETENTION_INTERVAL",
            "Seconds between two rounds of the retention job",
            ge=0.01,
        ),
    ] = 300.0

    webhook_timeout: Annotated[
        Seconds,
        _env(
            "MAILROOM_WEBHOOK_TIMEOUT", "Seconds one webhook attempt may take, then it failed", gt=0
        ),
    ] = 10.0
    webhook_retry_schedule: Annotated[
        tuple[float, ...],
        _env(
            "MAILROOM_WEBHOOK_RETRY_SCHEDULE",
            "Comma-separated seconds to wait before each webhook attempt (the first is usually 0)",
            min_length=1,
            max_length=100,
        ),
    ] = WEBHOOK_RETRY_SCHEDULE
    webhook_allow_private: Annotated[
        bool,
        _env(
            "MAILROOM_WEBHOOK_ALLOW_PRIVATE",
            "on: webhooks may reach loopback and private addresses (development and tests only)",
        ),
    ] = False
    webhook_concurrency: Annotated[
        int, _env("MAILROOM_WEBHOOK_CONCURRENCY", "Webhook attempts one worker runs at once", ge=1)
    ] = 32
    webhook_endpoint_concurrency: Annotated[
        int,
        _env(
            "MAILROOM_WEBHOOK_ENDPOINT_CONCURRENCY",
            "Webhook attempts one worker runs at once to one agent's endpoint",
            ge=1,
        ),
    ] = 4
    webhook_poll_interval: Annotated[
        Seconds,
        _env(
            "MAILROOM_WEBHOOK_POLL_INTERVAL",
            "Most seconds a dispatcher sleeps without a notification before it looks again",
            gt=0,
        ),
    ] = 5.0
    webhook_retention: Annotated[
        Seconds,
        _env(
            "MAILROOM_WEBHOOK_RETENTION",
            "Seconds a delivered webhook delivery is kept before it is purged",
            ge=0,
        ),
    ] = 604800.0
    max_header_bytes: Annotated[
        int,
        _env(
            "MAILROOM_MAX_HEADER_BYTES",
            "Largest request head (request line and headers), in bytes; more is 431",
            ge=1024,
        ),
    ] = 16384
    max_headers: Annotated[
        int, _env("MAILROOM_MAX_HEADERS", "Most header fields in a request; more is 431", ge=1)
    ] = 100
    header_timeout: Annotated[
        Seconds,
        _env(
            "MAILROOM_HEADER_TIMEOUT",
            "Seconds a connection may take to send a request's head; then 408 (or closed)",
            gt=0,
        ),
    ] = 10.0
    body_timeout: Annotated[
        Seconds,
        _env(
            "MAILROOM_BODY_TIMEOUT", "Seconds a request's body may take to arrive; then 408", gt=0
        ),
    ] = 30.0
    forwarded_allow_ips: Annotated[
        tuple[str, ...],
        _env(
            "FORWARDED_ALLOW_IPS",
            "Proxies (addresses, networks or *) whose X-Forwarded-Proto/-Host/-For are believed",
        ),
    ] = forwarded.LOCAL

    def __post_init__(self) -> None:
        if self.pool_max_size < self.pool_min_size:
            raise ValueError(
                "MAILROOM_POOL_MAX_SIZE must be at least MAILROOM_POOL_MIN_SIZE"
                f" ({self.pool_max_size} < {self.pool_min_size})"
            )


# An operator secret (the admin token, the metrics token) shorter than this, or with
# fewer different characters ("0000...", "abab..."), is refused at start-up.
MIN_SECRET_LENGTH = 32
MIN_SECRET_VARIETY = 8
WEAK_SECRET = (
    f"an operator secret must be at least {MIN_SECRET_LENGTH} characters of printable ASCII "
    f"with at least {MIN_SECRET_VARIETY} different ones; make one with "
    "`openssl rand -base64 32`"
)
OFF = ("off", "none", "")
SECRETS = ("METRICS_TOKEN", "MAILROOM_ADMIN_TOKEN")  # never echoed in an error


def read_file(path: str) -> str:
    """A setting kept in a file (a mounted Kubernetes Secret, for example)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None


def _operator_secret(text: str) -> str:
    """A token the operator chose, of real strength: long, and not one character repeated.

    The error says what is missing (how long, how many different characters)
    and never the secret itself.
    """
    text = text.strip()
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"{WEAK_SECRET} (it has other characters)")
    if len(text) < MIN_SECRET_LENGTH or len(set(text)) < MIN_SECRET_VARIETY:
        raise ValueError(
            f"{WEAK_SECRET} (it has {len(text)} characters, {len(set(text))} different)"
        )
    return text


def _optional_secret(text: str) -> str | None:
    """An operator secret that may be left empty (unset)."""
    return _operator_secret(text) if text.strip() else None


def _auth(text: str) -> bool:
    modes = {"required": True, "off": False}
    if text not in modes:
        raise ValueError("must be one of: required, off")
    return modes[text]


def _optional(parse: Callable[[str], Any], off: tuple[str, ...] = OFF) -> Callable[[str], Any]:
    return lambda text: None if text.lower() in off else parse(text)


def _schedule(text: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError("must be comma-separated seconds, such as 0,5,300") from None
    if any(not 0 <= delay <= 604800 for delay in delays):
        raise ValueError("each delay must be between 0 and 604800 seconds (a week)")
    return delays


def _switch(text: str) -> bool:
    modes = {"on": True, "off": False}
    if text.lower() not in modes:
        raise ValueError("must be on or off")
    return modes[text.lower()]


_NUMBER = re.compile(r"[0-9]{1,18}")

# How a variable's text becomes its field's value, where plain int/float/str is not enough.
PARSERS: dict[str, Callable[[str], Any]] = {
    "DATABASE_URL": normalise_url,
    "LOG_LEVEL": str.upper,
    "LOG_FORMAT": str.lower,
    "METRICS_TOKEN": _optional_secret,
    "MAILROOM_AUTH": _auth,
    "MAILROOM_ADMIN_TOKEN": _operator_secret,
    "MAILROOM_PREPARE_THRESHOLD": _optional(int),
    "MAILROOM_STATEMENT_TIMEOUT": _optional(float, (*OFF, "0")),
    "MAILROOM_WEBHOOK_RETRY_SCHEDULE": _schedule,
    "MAILROOM_WEBHOOK_ALLOW_PRIVATE": _switch,
    "MAILROOM_RETENTION_DAYS": _optional(int),
    "FORWARDED_ALLOW_IPS": forwarded.trusted_proxies,
}
# Variables that name a file holding the value of another (a mounted Secret). The
# variable itself wins when both are set, except the admin token, where both is an error.
FILE_VARIABLES = {
    "METRICS_TOKEN_FILE": "METRICS_TOKEN",
    "MAILROOM_ADMIN_TOKEN_FILE": "MAILROOM_ADMIN_TOKEN",
}


def _described() -> dict[str, tuple[str, type, str]]:
    """Variable -> (field, msgspec.inspect type of its value, help text), from each field's Meta."""
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    found = {}
    for field in info.fields:
        kind = field.type
        if isinstance(kind, msgspec.inspect.UnionType):  # X | None
            kind = next(t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType))
        assert isinstance(kind, msgspec.inspect.Metadata), field.name
        text = (kind.extra_json_schema or {}).get("description", "")
        found[kind.extra["env"]] = (field.name, type(kind.type), text)
    return found


FIELDS = {variable: (field, kind) for variable, (field, kind, _) in _described().items()}
# Every variable the settings read, with its help text: what docs/configuration.md lists.
ENVIRONMENT: dict[str, str] = {variable: text for variable, (*_, text) in _described().items()}
ENVIRONMENT |= {
    name: f"A file holding {target} (a mounted Secret)" for name, target in FILE_VARIABLES.items()
}


def _plain(kind: type, text: str) -> Any:
    """Text as int, float or str; text that is not one stays a str, which msgspec refuses."""
    if kind is msgspec.inspect.IntType:
        return int(text) if _NUMBER.fullmatch(text.removeprefix("-")) else text
    if kind is msgspec.inspect.FloatType:
        try:
            return float(text)
        except ValueError:
            return text
    return text


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment; a bad value stops start-up naming the variable."""
    if environ.get("MAILROOM_ADMIN_TOKEN") and environ.get("MAILROOM_ADMIN_TOKEN_FILE"):
        raise SystemExit(
            "mailroom: set MAILROOM_ADMIN_TOKEN or MAILROOM_ADMIN_TOKEN_FILE, not both"
        )
    texts = dict(environ)
    shown = {variable: repr(text) for variable, text in environ.items()}
    for file_variable, variable in FILE_VARIABLES.items():
        path = environ.get(file_variable)
        if path and variable not in environ:
            try:
                texts[variable] = read_file(path)
            except ValueError as error:
                raise SystemExit(f"mailroom: invalid {file_variable}={path!r}: {error}") from None
            shown[variable] = f"(read from {file_variable}={path!r})"
    for variable in SECRETS:
        if variable in shown and variable in environ:
            shown[variable] = "(hidden)"
    values: dict[str, Any] = {}
    variables: dict[str, str] = {}
    for variable, (field, kind) in FIELDS.items():
        text = texts.get(variable)
        if text is None or (text == "" and variable == "DATABASE_URL"):
            continue
        text = text.strip()
        try:
            value = PARSERS[variable](text) if variable in PARSERS else _plain(kind, text)
        except ValueError as error:
            raise SystemExit(f"mailroom: invalid {variable}={shown[variable]}: {error}") from None
        values[field] = value
        variables[field] = variable
    if values.get("db_connections") is not None and "pool_max_size" not in values:
        # The replica's share of max_connections, split between its workers.
        defaults = Settings()
        workers = values.get("workers", defaults.workers)
        budget = values["db_connections"]
        if isinstance(workers, int) and isinstance(budget, int) and workers > 0 and budget > 0:
            per_worker = max(1, budget // workers)
            values["pool_max_size"] = per_worker
            minimum = values.get("pool_min_size", defaults.pool_min_size)
            if isinstance(minimum, int):
                values["pool_min_size"] = min(minimum, per_worker)
    try:
        return msgspec.convert(values, Settings)
    except msgspec.ValidationError as error:
        raise SystemExit(_problem(str(error), variables, shown)) from None


_AT_FIELD = re.compile(r" - at `\$\.(\w+)`$")


def _problem(message: str, variables: Mapping[str, str], shown: Mapping[str, str]) -> str:
    """msgspec's complaint about a field, told by the variable that set it."""
    found = _AT_FIELD.search(message)
    if found is None:  # __post_init__'s own sentence names its variables
        return f"mailroom: invalid settings: {message}"
    variable = variables.get(found[1], found[1])
    return f"mailroom: invalid {variable}={shown.get(variable)}: {message[: found.start()]}"
