"""Erasure requests over HTTP: the tombstone as `archiver erase` writes it (consumer.erasure's
`request`: the erasures row, the fences, the working state), in the transaction of the key's
tenant, so that row-level security keeps it to that tenant's subjects. The archiver's `erasure`
job then carries it out (Redis, PostgreSQL, the cold tier); its status is read back here."""

from __future__ import annotations

from typing import Any

from consumer import erasure, exceptions
from consumer.api import auth, models, problems

KINDS = {"customer_id": "customer", "user_id": "user", "conversation_id": "conversation"}


def _item(e: erasure.Erasure) -> dict[str, Any]:
    item = e.as_item()
    item.pop("tenant_id", None)
    return item


async def request(
    s: auth.Session, key: bytes | None, wanted: models.ErasureRequest
) -> dict[str, Any]:
    """Record the erasure of the one subject `wanted` names; its status (202)."""
    if key is None:
        raise problems.Problem(503, "erasure is not configured on this API (ARCHIVER_ERASURE_KEY)")
    field, subject = wanted.subject()
    try:
        made = await erasure.request(s.conn, key, s.tenant, KINDS[field], subject, wanted.reason)
    except (exceptions.UsageError, exceptions.ConfigError) as exc:
        raise problems.Problem(422, f"the erasure cannot be requested: {exc}") from None
    return _item(made)


async def status(s: auth.Session, erasure_id: int) -> dict[str, Any]:
    """An erasure of the tenant; 404 if there is none (or it is another tenant's)."""
    try:
        return _item(await erasure.status(s.conn, erasure_id))
    except exceptions.NotFoundError:
        raise problems.Problem(404, "no such erasure") from None
