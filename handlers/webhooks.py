"""Webhooks of an agent: rotating the signing secret, listing deliveries, retrying one."""

from __future__ import annotations

import itertools
from uuid import UUID

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from handlers.bodies import ENCODER, json_response
from handlers.http_errors import Conflict, NotFound
from handlers.pagination import cut_page, page_start
from handlers.params import path_uuid, query
from queries import sql
from validation.query_params import DeliveriesQuery
from validation.responses import Delivery, WebhookSecret
from webhooks.signing import new_secret

SCOPE = b"d"
NO_WEBHOOK = "Agent {} has no webhook: set webhook_url with PUT /agents/{} first"


class _Rotated(msgspec.Struct, frozen=True):
    """Row of rotate_webhook_secret."""

    agent_exists: bool
    previous_valid_until: str | None


async def rotate_secret(request: Request) -> Response:
    """A new signing secret, shown this once; the old one signs alongside it for 24 hours."""
    agent_id = path_uuid(request, "agent_id")
    secret = new_secret()
    async with request.state.pool.connection() as conn:
        rotated = await sql.rotate_webhook_secret.one(
            conn, _Rotated, agent_id=agent_id, secret=secret
        )
    assert rotated is not None  # the statement always returns one row
    if not rotated.agent_exists:
        raise NotFound("Agent not found")
    if rotated.previous_valid_until is None:
        raise Conflict(NO_WEBHOOK.format(agent_id, agent_id))
    return json_response(
        WebhookSecret(
            agent_id=agent_id,
            webhook_secret=secret,
            previous_valid_until=rotated.previous_valid_until,
        )
    )


async def list_deliveries(request: Request) -> Response:
    """The agent's webhook deliveries, newest first, optionally of one status."""
    agent_id = path_uuid(request, "agent_id")
    page = query(request, DeliveriesQuery)
    after_created_at, after_id = page_start(request, SCOPE, page.cursor, descending=True)
    async with request.state.pool.connection() as conn:
        items = await sql.list_deliveries.all(
            conn,
            Delivery,
            agent_id=agent_id,
            status=page.status,
            after_created_at=after_created_at,
            after_id=after_id,
            limit=page.limit + 1,
        )
        if not items and not await sql.agent_exists.value(conn, agent_id=agent_id):
            raise NotFound("Agent not found")
    # A delivery's fields are the service's own and short, so its size is measured here
    # rather than summed by the statement (handlers/pagination.py, fit).
    sizes = itertools.accumulate(len(ENCODER.encode(item)) for item in items)
    page_items, headers = cut_page(
        request, SCOPE, list(zip(items, sizes, strict=True)), page.limit, _sort_key
    )
    return json_response(page_items, headers=headers)


def _sort_key(delivery: Delivery) -> tuple[str, UUID]:
    return delivery.created_at, delivery.id


class _DeliveryState(msgspec.Struct, frozen=True):
    """Row of get_delivery_status."""

    status: str
    webhook_works: bool


async def retry_delivery(request: Request) -> Response:
    """Send a delivered or dead delivery again now, with the same webhook-id."""
    agent_id = path_uuid(request, "agent_id")
    delivery_id = path_uuid(request, "delivery_id")
    async with request.state.pool.connection() as conn:
        state = await sql.get_delivery_status.one(
            conn, _DeliveryState, agent_id=agent_id, delivery_id=delivery_id
        )
        if state is None:
            if not await sql.agent_exists.value(conn, agent_id=agent_id):
                raise NotFound("Agent not found")
            raise NotFound("Delivery not found")
        if not state.webhook_works:
            raise Conflict(
                f"Agent {agent_id} has no working webhook (none set, or disabled after a 410):"
                f" set webhook_url with PUT /agents/{agent_id}, then retry"
            )
        retried = await sql.retry_delivery.one(
            conn, Delivery, agent_id=agent_id, delivery_id=delivery_id
        )
    if retried is None:
        raise Conflict(f"Delivery {delivery_id} is pending: it is tried again on its own schedule")
    return json_response(retried)
