"""Commands of the History API: `archiver api` serves it, `archiver api-keys` manages its keys
(as the schema owner: the API's own role may only check a key by its hash)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import click

from consumer import apikeys, exceptions, settings, terminal
from consumer.cli import app, exits, options

T = TypeVar("T")


@app.main.command("api")
@options.settings_options("api")
def api_command(**values: Any) -> None:
    """Serve the History API (HTTP, JSON; /docs, /openapi.json, /healthz, /readyz) until
    SIGTERM/SIGINT. Refuses to start as a database role that could read every tenant."""
    s = app.load_settings(values)
    # FastAPI and uvicorn load only when serving: every other command starts faster.
    from consumer.api import app as api_app
    from consumer.api import server

    url = s.api_database_url or s.database_url
    config = api_app.Config(url, s.api_pool_size, s.api_timeout, s.erasure_secret)
    with exits.reaching_postgres(url):
        server.serve(config, server.Listen(s.api_host, s.api_port, s.api_idle_timeout))


def _owner_only(s: settings.Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Key management is the schema owner's; another role is told whose connection it needs."""

    async def as_owner(conn: asyncpg.Connection) -> T:
        try:
            return await work(conn)
        except asyncpg.InsufficientPrivilegeError:
            raise exceptions.ConfigError(
                "managing API keys needs the schema owner's connection: give --database-url /"
                " ARCHIVER_DATABASE_URL of the migration owner (ops/OPERATIONS.md, History API)"
            ) from None

    return app.run_db(s, as_owner)


@app.main.group("api-keys")
def api_keys_group() -> None:
    """Keys of the History API: each belongs to one tenant and has scopes (read, erase); only a
    hash is stored, the key itself is printed once by `create`. Needs the schema owner's
    connection."""


@api_keys_group.command("create")
@click.option("--tenant", required=True, help="The tenant whose history the key reads.")
@click.option("--name", required=True, help="Who or what uses it (shown in `list`).")
@click.option("--scope", "scope", default="read", show_default=True,
              help="read, or read,erase (erasure requests).")  # fmt: skip
@click.option("--expires", metavar="DURATION", help="Expire after 90d, 12h... [default: never]")
@options.json_option
@options.settings_options("api-keys")
def api_keys_create_command(
    tenant: str, name: str, scope: str, expires: str | None, out: terminal.Output, **values: Any
) -> None:
    """Create a key and print it once (it cannot be shown again)."""
    s = app.load_settings(values)
    scopes, lifetime = apikeys.parse_scopes(scope), apikeys.parse_expires(expires)
    created = _owner_only(s, lambda conn: apikeys.create(conn, tenant, name, scopes, lifetime))
    out.summary(
        created.item | {"key": created.key},
        f"key {created.item['id']} for tenant {tenant} ({','.join(scopes)}): {created.key}"
        "\nit is shown only now: store it as a secret",
    )


@api_keys_group.command("list")
@click.option("--tenant", help="Only this tenant's keys.")
@options.json_option
@options.settings_options("api-keys")
def api_keys_list_command(tenant: str | None, out: terminal.Output, **values: Any) -> None:
    """Every key (never the key itself: its first characters), with its state."""
    s = app.load_settings(values)
    found = _owner_only(s, lambda conn: apikeys.listing(conn, tenant))
    out.items(found, apikeys.COLUMNS, None, "no API keys")


@api_keys_group.command("revoke")
@click.argument("id", type=click.IntRange(min=1))
@options.json_option
@options.settings_options("api-keys")
def api_keys_revoke_command(id: int, out: terminal.Output, **values: Any) -> None:
    """Revoke key ID (see `list`): requests with it get 401 from now on. Exit 1 if no such key."""
    s, key_id = app.load_settings(values), id
    revoked = _owner_only(s, lambda conn: apikeys.revoke(conn, key_id))
    out.summary(revoked, f"revoked key {key_id} ({revoked['name']}, tenant {revoked['tenant_id']})")
