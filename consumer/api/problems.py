"""Errors as RFC 9457 problem details (application/problem+json), for every status the API
returns: its own refusals, FastAPI's validation errors, Starlette's 404/405, and a database that
cannot answer (503). Bodies never echo what the client sent."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import asyncpg
import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from consumer import exceptions
from consumer.api import models

MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger("consumer.api")


class Problem(exceptions.ArchiverError):
    """The request is refused with this status and detail."""

    def __init__(
        self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def body(status: int, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
            "detail": detail} | extra  # fmt: skip


def response(
    status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    content = orjson.dumps(body(status, detail, **extra))
    return Response(content, status_code=status, media_type=MEDIA_TYPE, headers=headers)


async def _problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return response(exc.status, exc.detail, exc.headers, **exc.extra)


async def _http(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return response(exc.status_code, detail, dict(exc.headers or {}))


def _error(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error without the offending input (it might be a secret)."""
    where = [str(part) for part in error.get("loc", ())]
    return {"location": where, "message": str(error.get("msg", "invalid"))}


async def _validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_error(e) for e in exc.errors()]
    names = ", ".join(".".join(e["location"][1:]) or e["location"][0] for e in errors[:5])
    return response(422, f"invalid request: {names}", errors=errors)


async def _database(_: Request, exc: Exception) -> Response:
    log.warning("api_database_error", error=type(exc).__name__)
    return response(503, "the archive cannot be read right now; try again later",
                    {"Retry-After": "5"})  # fmt: skip


async def _bug(_: Request, exc: Exception) -> Response:
    log.error("api_internal_error", error=type(exc).__name__)  # never the request's content
    return response(500, "internal error: the API failed on this request (see its logs)")


DATABASE_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def install(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    for kind in DATABASE_FAILURES:
        app.add_exception_handler(kind, _database)
    app.add_exception_handler(Exception, _bug)  # a bug still answers in problem details


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses: each a problem details body."""
    schema = models.Problem.model_json_schema()
    return {
        status: {"description": HTTPStatus(status).phrase,
                 "content": {MEDIA_TYPE: {"schema": schema}}}
        for status in statuses
    }  # fmt: skip
