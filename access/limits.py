"""Limits per agent key: rate limits on writes and recipients, the cap on open streams and
long-polls."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Hashable
from uuid import UUID

from starlette.requests import Request

from access.authentication import caller
from handlers.http_errors import TooManyRequests
from queries.listener import Subscription
from validation.errors import InvalidInput


class RateLimits:
    """Token buckets per (who, kind) in this process: a replica's own count.

    `who` is an agent's id, or a client address for failed authentications.
    Each kind allows `per_minute` tokens a minute, with bursts of as many; 0
    turns the kind's limit off. The admin and an unauthenticated service are
    never limited by agent.
    """

    # Buckets kept per kind before the full ones are forgotten. Kinds are kept apart:
    # client addresses (failed authentications) are as many as an attacker has, and
    # filling their table must not reset the agents' buckets.
    MAX_BUCKETS = 100_000

    def __init__(self, per_minute: dict[str, int]) -> None:
        self.per_minute = per_minute
        # kind -> who -> (tokens, when they were counted)
        self.buckets: defaultdict[str, dict[Hashable, tuple[float, float]]] = defaultdict(dict)

    def take(self, who: Hashable, kind: str, count: int = 1) -> int:
        """0 when a request costing `count` tokens may go ahead, else the whole seconds
        to wait (`count` is at most the kind's capacity: more would never pass)."""
        return self._spend(who, kind, count, take=True)

    def wait(self, who: Hashable, kind: str) -> int:
        """The whole seconds until `who` has a token of `kind` again, 0 if it has one;
        nothing is taken."""
        return self._spend(who, kind, 1, take=False)

    def _spend(self, who: Hashable, kind: str, count: int, take: bool) -> int:
        capacity = self.per_minute.get(kind, 0)
        if capacity <= 0:
            return 0
        rate = capacity / 60.0
        now = time.monotonic()
        buckets = self.buckets[kind]
        tokens, then = buckets.get(who, (float(capacity), now))
        tokens = min(float(capacity), tokens + (now - then) * rate)
        if tokens < count:
            buckets[who] = (tokens, now)
            return max(1, int((count - tokens) / rate + 0.999))
        if take:
            if len(buckets) >= self.MAX_BUCKETS:
                self._forget(buckets, capacity, rate, now)
            buckets[who] = (tokens - count, now)
        return 0

    def _forget(
        self, buckets: dict[Hashable, tuple[float, float]], capacity: int, rate: float, now: float
    ) -> None:
        """Forget the buckets that have refilled (a full bucket is the default: nothing is
        lost); if that is not half of them, forget the kind's whole table: an attacker
        with that many addresses resets only the failed-authentication counts it could
        already spread over them."""
        for who, (tokens, then) in list(buckets.items()):
            if tokens + (now - then) * rate >= capacity:
                del buckets[who]
        if len(buckets) > self.MAX_BUCKETS // 2:
            buckets.clear()


def take_recipients(request: Request, count: int) -> None:
    """Spend `count` recipient rows of the calling agent's minute, or 429.

    The write rate counts requests, and one POST /messages may name 1000
    recipients (each a row and a notification); MAILROOM_RECIPIENT_RATE_LIMIT
    counts the rows. More recipients than a whole minute's budget is 422: no
    wait would let them through.
    """
    agent_id = caller(request)
    budget = request.state.settings.recipient_rate_limit
    if agent_id is None or count == 0 or budget == 0:
        return
    if count > budget:
        raise InvalidInput.at(
            ["body", "recipient_ids"],
            f"At most {budget} recipients a minute per API key: send this message to fewer "
            "recipients, then add the rest with POST /message_recipients",
            "too_long",
        )
    wait = request.state.rate_limits.take(agent_id, "recipients", count)
    if wait:
        raise TooManyRequests(
            f"This API key has used its {budget} recipients a minute; retry later",
            {"Retry-After": str(wait)},
        )


def hold_wait_slot(request: Request, agent_id: UUID) -> Subscription:
    """Register a stream's or long-poll's waiter for `agent_id`, or 429.

    An agent key may hold MAILROOM_WAITS_PER_AGENT of them open on this process
    (each one is a read per new message). The count and the registration happen
    in one step, with no await between, so requests opened at the same moment
    cannot all pass the check before any of them is counted.
    """
    listener = request.state.listener
    if caller(request) is not None:
        limit = request.state.settings.waits_per_agent
        if len(listener.waiters.get(agent_id, ())) >= limit:
            raise TooManyRequests(
                f"This agent already has {limit} streams or long-polls open; close one first",
                {"Retry-After": "5"},
            )
    return listener.subscribe(agent_id)
