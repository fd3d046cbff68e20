"""The endpoints (v1) and the probes. Each reads top-down: check the request, open the key's
transaction, read, answer as JSON."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from consumer import queries
from consumer.api import auth, erasures, models, params, problems, reads

READ = "read"
ERASE = "erase"
ERRORS = problems.documented(400, 401, 403, 404, 422, 503)
Key = Depends(auth.presented_key)

v1 = APIRouter(prefix="/v1", responses=ERRORS)
probes = APIRouter()


def _json(content: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


@v1.get(
    "/conversations",
    response_model=models.ConversationPage,
    dependencies=[Depends(params.only("customer_id", "user_id", "since", "until", "limit", "cursor"))],
    summary="The tenant's conversations, newest first",
)  # fmt: skip
async def list_conversations(
    request: Request,
    customer_id: params.CustomerQuery = None,
    user_id: params.UserQuery = None,
    since: params.Since = None,
    until: params.Until = None,
    limit: params.Limit = params.DEFAULT_LIMIT,
    cursor: params.Cursor = None,
    key: str = Key,
) -> Response:
    """Newest first by start (a conversation getting new messages does not move while you page);
    `since`: still active then (ended at or after it); `until`: started before it."""
    wanted = reads.ConversationFilter(customer_id, user_id, reads.Window(since, until))
    async with auth.session(request, key, READ) as s:
        return _json(await reads.conversations(s, wanted, reads.Page(limit, cursor)))


@v1.get(
    "/conversations/{conversation_id}/messages",
    response_model=models.MessagePage,
    dependencies=[Depends(params.only("limit", "cursor"))],
    summary="A conversation's messages, in order",
)
async def conversation_messages(
    request: Request,
    conversation_id: params.ConversationPath,
    limit: params.Limit = params.DEFAULT_LIMIT,
    cursor: params.Cursor = None,
    key: str = Key,
) -> Response:
    page = reads.Page(limit, cursor)
    async with auth.session(request, key, READ) as s:
        return _json(await reads.conversation_messages(s, conversation_id, page))


@v1.get(
    "/customers/{customer_id}/messages",
    response_model=models.CustomerMessagePage,
    dependencies=[Depends(params.only("since", "until", "limit", "cursor"))],
    summary="A customer's messages across conversations, in order",
)
async def customer_messages(
    request: Request,
    customer_id: params.CustomerPath,
    since: params.Since = None,
    until: params.Until = None,
    limit: params.Limit = params.DEFAULT_LIMIT,
    cursor: params.Cursor = None,
    key: str = Key,
) -> Response:
    window, page = reads.Window(since, until), reads.Page(limit, cursor)
    async with auth.session(request, key, READ) as s:
        return _json(await reads.customer_messages(s, customer_id, window, page))


@v1.get(
    "/users/{user_id}/profile",
    response_model=models.Profile,
    dependencies=[Depends(params.only())],
    summary="A user's conversation statistics",
)
async def user_profile(request: Request, user_id: params.UserPath, key: str = Key) -> Response:
    async with auth.session(request, key, READ) as s:
        return _json(await reads.profile(s, user_id))


@v1.post(
    "/erasures",
    status_code=202,
    response_model=models.Erasure,
    dependencies=[Depends(params.only())],
    summary="Request the erasure of a customer, a user or a conversation",
)
async def request_erasure(
    request: Request, wanted: models.ErasureRequest, key: str = Key
) -> Response:
    """The tombstone is written at once (the archive path refuses the subject's messages from
    then on); the archiver's `erasure` job erases it from Redis, PostgreSQL and the cold tier.
    Follow it with `GET /v1/erasures/{id}`."""
    secret = request.app.state.erasure_key
    async with auth.session(request, key, ERASE, write=True) as s:
        return _json(await erasures.request(s, secret, wanted), 202)


@v1.get(
    "/erasures/{erasure_id}",
    response_model=models.Erasure,
    dependencies=[Depends(params.only())],
    summary="An erasure's status and counts",
)
async def erasure_status(
    request: Request, erasure_id: params.ErasureIdPath, key: str = Key
) -> Response:
    async with auth.session(request, key, ERASE) as s:
        return _json(await erasures.status(s, erasure_id))


@probes.get("/healthz", response_model=models.Health, summary="The process serves requests")
async def healthz() -> Response:
    return _json({"status": "ok"})


@probes.get(
    "/readyz",
    response_model=models.Health,
    responses={503: {"model": models.Health, "description": "PostgreSQL does not answer"}},
    summary="PostgreSQL answers",
)
async def readyz(request: Request) -> Response:
    pool: asyncpg.Pool = request.app.state.pool
    try:
        async with pool.acquire(timeout=request.app.state.timeout) as conn:
            await conn.fetchval(queries.get("api_ping"))
    except problems.DATABASE_FAILURES:
        return _json({"status": "unavailable"}, 503)
    return _json({"status": "ok"})
