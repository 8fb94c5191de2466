"""POST /cli/echo: the message rule, literal output, no shell, failures, timeouts, output cap."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import handlers.echo
from handlers.echo import run_command
from service import create_app
from settings import Settings
from tests.helpers import assert_invalid

PUNCTUATION = ".,!?-_"


def echo_ok(client: TestClient, sent: str, expected: str | None = None) -> None:
    """POST `sent`; the answer is a success whose message and output are `expected`."""
    expected = sent if expected is None else expected
    response = client.post("/cli/echo", json={"message": sent})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": True,
        "message": expected,
        "output": expected,
        "error": None,
    }


def assert_invalid_characters(client: TestClient, message: object) -> None:
    """A 422 on body.message whose msg says "invalid characters"."""
    response = client.post("/cli/echo", json={"message": message})
    assert_invalid(response, "body", "message")
    msgs = [error["msg"] for error in response.json()["detail"]]
    assert any("invalid characters" in msg for msg in msgs), msgs


# The rule --------------------------------------------------------------------


def test_normal_message_is_echoed(client: TestClient) -> None:
    echo_ok(client, "Hello world 123")


def test_surrounding_spaces_are_stripped(client: TestClient) -> None:
    echo_ok(client, "   hello there   ", "hello there")


def test_inner_spaces_are_kept(client: TestClient) -> None:
    echo_ok(client, "a  b   c")


@pytest.mark.parametrize("text", ["-n", "-e", "-E", "-neE", "-n hello", "-", "--", "--help"])
def test_option_like_messages_are_printed_literally(client: TestClient, text: str) -> None:
    echo_ok(client, text)


@pytest.mark.parametrize("mark", list(PUNCTUATION))
def test_every_allowed_punctuation_mark(client: TestClient, mark: str) -> None:
    echo_ok(client, f"a{mark}b {mark}")


def test_all_allowed_characters_together(client: TestClient) -> None:
    text = "ABCXYZ abcxyz 0123456789 " + PUNCTUATION
    echo_ok(client, text)


def test_message_made_of_punctuation_only(client: TestClient) -> None:
    echo_ok(client, PUNCTUATION)


def test_1000_characters_are_accepted(client: TestClient) -> None:
    echo_ok(client, "x" * 1000)


def test_length_counts_after_stripping(client: TestClient) -> None:
    echo_ok(client, "  " + "y" * 1000 + "  ", "y" * 1000)


def test_1001_characters_are_refused(client: TestClient) -> None:
    response = client.post("/cli/echo", json={"message": "x" * 1001})
    assert_invalid(response, "body", "message")


@pytest.mark.parametrize("text", ["x" * 1001, "  " + "y" * 1001 + "  ", "!" * 5000])
def test_too_long_message_is_string_too_long_as_fastapi_words_it(
    client: TestClient, text: str
) -> None:
    """Counted after stripping; the item carries the message as sent."""
    response = client.post("/cli/echo", json={"message": text})
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": [
            {
                "type": "string_too_long",
                "loc": ["body", "message"],
                "msg": "String should have at most 1000 characters",
                "input": text,
                "ctx": {"max_length": 1000},
            }
        ]
    }


@pytest.mark.parametrize("text", ["", " ", "     "])
def test_empty_or_blank_message_is_refused(client: TestClient, text: str) -> None:
    response = client.post("/cli/echo", json={"message": text})
    assert_invalid(response, "body", "message")


@pytest.mark.parametrize("text", ["", " ", "\t\n "])
def test_empty_or_blank_message_is_string_too_short_as_fastapi_words_it(
    client: TestClient, text: str
) -> None:
    response = client.post("/cli/echo", json={"message": text})
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": [
            {
                "type": "string_too_short",
                "loc": ["body", "message"],
                "msg": "String should have at least 1 character",
                "input": text,
                "ctx": {"min_length": 1},
            }
        ]
    }


def test_a_message_of_the_right_length_with_a_refused_character_keeps_its_sentence(
    client: TestClient,
) -> None:
    """No pydantic type says "these characters only": the rule's own words, no ctx."""
    response = client.post("/cli/echo", json={"message": "a;b"})
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": [
            {
                "type": "value_error",
                "loc": ["body", "message"],
                "msg": "Message contains invalid characters: after trimming it must be 1 to"
                " 1000 of A-Z a-z 0-9, space and . , ! ? - _",
            }
        ]
    }


@pytest.mark.parametrize(
    "body",
    [{}, {"message": 5}, {"message": None}, {"message": "hi", "extra": 1}, ["hi"]],
    ids=["missing", "number", "null", "unknown-field", "array"],
)
def test_malformed_bodies_are_refused(client: TestClient, body: object) -> None:
    assert_invalid(client.post("/cli/echo", json=body), "body")


@pytest.mark.parametrize(
    ("body", "type", "loc", "msg"),
    [
        ({}, "missing", ["body", "message"], "Field required"),
        ({"message": 5}, "string_type", ["body", "message"], "Input should be a valid string"),
        ({"message": None}, "string_type", ["body", "message"], "Input should be a valid string"),
        (
            {"message": "hi", "extra": 1},
            "extra_forbidden",
            ["body", "extra"],
            "Extra inputs are not permitted",
        ),
        (
            ["hi"],
            "model_attributes_type",
            ["body"],
            "Input should be a valid dictionary or object to extract fields from",
        ),
    ],
    ids=["missing", "number", "null", "unknown-field", "array"],
)
def test_malformed_bodies_are_worded_as_fastapi_words_them(
    client: TestClient, body: object, type: str, loc: list[str], msg: str
) -> None:
    response = client.post("/cli/echo", json=body)
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    assert (item["type"], item["loc"], item["msg"]) == (type, loc, msg)


def test_body_that_is_not_json_is_refused(client: TestClient) -> None:
    response = client.post(
        "/cli/echo", content=b"message=hi", headers={"content-type": "application/json"}
    )
    assert_invalid(response, "body")


HOSTILE = [
    "; id",
    "hello; id",
    "$(id)",
    "`id`",
    "a | b",
    "a && b",
    ">file",
    "a < b",
    "a\nb",
    "a\tb",
    "a\rb",
    "a\x00b",
    "é",
    "café",
    "ß",
    "日本",
    "a\u00a0b",
    "it's",
    'say "hi"',
    "a\\nb",
    "a\\b",
    "~",
    "*",
    "a#b",
    "100%",
    "a=b",
    "(a)",
    "a/b",
    "a:b",
    "{a,b}",
    "$HOME",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_is_refused(client: TestClient, text: str) -> None:
    assert_invalid_characters(client, text)


@pytest.mark.parametrize(
    "template",
    [
        "hello; touch {target}",
        "$(touch {target})",
        "`touch {target}`",
        "hello > {target}",
        "hello && touch {target}",
        "hello | tee {target}",
        "hello\ntouch {target}",
    ],
)
def test_hostile_input_runs_nothing(client: TestClient, tmp_path: Path, template: str) -> None:
    target = tmp_path / "pwned"
    assert_invalid_characters(client, template.format(target=target))
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_arguments_never_reach_a_shell(tmp_path: Path) -> None:
    """Text a shell would run is printed literally by run_command."""
    target = tmp_path / "pwned"
    text = f"$(touch {target}); touch {target} `touch {target}`"
    status, stdout = asyncio.run(run_command(["echo", text], 5, 65536))
    assert status == 0
    assert stdout == (text + "\n").encode()
    assert not target.exists()


# Failures, timeouts and the output cap ------------------------------------------


def test_failing_program_reports_return_code(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers.echo, "ECHO", "/bin/false")
    response = client.post("/cli/echo", json={"message": "  hello  "})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": False,
        "message": "hello",
        "output": None,
        "error": "Command failed with return code 1",
    }


def test_failure_reports_the_programs_own_return_code(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = "import sys; print('partial'); sys.exit(7)"
    monkeypatch.setattr(handlers.echo, "echo_argv", lambda text: [sys.executable, "-c", program])
    response = client.post("/cli/echo", json={"message": "hello"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": False,
        "message": "hello",
        "output": None,
        "error": "Command failed with return code 7",
    }


def test_run_command_returns_status_and_stdout() -> None:
    status, stdout = asyncio.run(
        run_command(["sh", "-c", "echo out; echo err >&2; exit 3"], 5, 100)
    )
    assert status == 3
    assert stdout == b"out\n"


def test_timeout_answers_408(
    database_url: str, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers.echo, "echo_argv", lambda text: ["sleep", "5"])
    app = create_app(Settings(database_url=database_url, echo_timeout=0.2, auth_required=False))
    with TestClient(app) as slow_client:
        started = time.monotonic()
        response = slow_client.post("/cli/echo", json={"message": "hello"})
        elapsed = time.monotonic() - started
    assert response.status_code == 408, response.text
    assert response.json() == {"detail": "Command execution timed out"}
    assert elapsed < 3, f"the timeout of 0.2 s took {elapsed:.1f} s"


def test_run_command_timeout_kills_the_program(tmp_path: Path) -> None:
    """After the timeout the program is gone: it never gets to write its file."""
    target = tmp_path / "late"
    script = f"sleep 1.5; touch {target}"

    async def run() -> None:
        with pytest.raises(TimeoutError):
            await run_command(["sh", "-c", script], 0.2, 100)
        await asyncio.sleep(2.5)

    started = time.monotonic()
    asyncio.run(run())
    assert time.monotonic() - started < 5
    assert not target.exists()


def test_run_command_caps_stdout() -> None:
    status, stdout = asyncio.run(run_command(["head", "-c", "1000000", "/dev/zero"], 10, 1000))
    assert status == 0
    assert stdout == b"\0" * 1000


def test_run_command_drains_large_stderr_without_blocking() -> None:
    """A program that writes more than a pipe holds to stderr still finishes."""
    script = "head -c 1000000 /dev/zero >&2; echo done"
    status, stdout = asyncio.run(run_command(["sh", "-c", script], 10, 100))
    assert status == 0
    assert stdout == b"done\n"


def test_output_cap_applies_to_the_endpoint(database_url: str, client: TestClient) -> None:
    app = create_app(Settings(database_url=database_url, echo_output_limit=5, auth_required=False))
    with TestClient(app) as capped_client:
        response = capped_client.post("/cli/echo", json={"message": "hello world"})
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "hello"
