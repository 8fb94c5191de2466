"""The errors a handler or a rule raises: each becomes `{"detail": sentence}` with its status."""

from __future__ import annotations


class HTTPError(Exception):
    """An error response with a `{"detail": sentence}` body."""

    status_code = 400

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class Unauthorized(HTTPError):
    """No key, or one that is not valid: the client should authenticate."""

    status_code = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"WWW-Authenticate": "Bearer"})


class TooManyRequests(HTTPError):
    status_code = 429


class NotFound(HTTPError):
    status_code = 404


class Forbidden(HTTPError):
    status_code = 403


class Conflict(HTTPError):
    status_code = 409


class PayloadTooLarge(HTTPError):
    status_code = 413


class Timeout(HTTPError):
    status_code = 408
