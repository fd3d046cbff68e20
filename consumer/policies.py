"""Retention policies (retention_policies): a default and one per tenant, each a keep period and
what happens to rows older than it (`delete`, or `export`: deleted only once the cold tier holds
a verified copy). A tenant without its own policy follows the default; with neither, nothing of
it is ever deleted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from consumer import exceptions, jobs, queries, settings, terminal

ACTIONS = ("delete", "export")
# Checkpoints live a day in Redis before they are archived (ARCHIVER_CHECKPOINT_TTL): a shorter
# keep would delete messages about as soon as they arrive.
MIN_KEEP = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Policy:
    tenant: str | None  # None: the default policy
    keep: timedelta
    then: str
    updated_at: datetime | None = None

    @property
    def scope(self) -> str:
        return "default" if self.tenant is None else "tenant"

    def as_item(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "tenant": self.tenant,
            "keep": settings.format_duration(self.keep.total_seconds()),
            "keep_seconds": int(self.keep.total_seconds()),
            "then": self.then,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Policies:
    default: Policy | None
    tenants: dict[str, Policy]

    def for_tenant(self, tenant: str) -> Policy | None:
        return self.tenants.get(tenant, self.default)

    def all(self) -> list[Policy]:
        return ([self.default] if self.default else []) + [
            self.tenants[t] for t in sorted(self.tenants)
        ]


COLUMNS = [
    terminal.column("scope", "scope"),
    terminal.column("tenant", "tenant", "id"),
    terminal.column("keep", "keep"),
    terminal.column("then", "then"),
    terminal.column("updated", "updated_at", "time", drop=1),
]


def describe(policy: Policy) -> str:
    """One line for people: whose policy, how long, then what."""
    whose = "the default policy" if policy.tenant is None else f"tenant {policy.tenant}'s policy"
    keep = settings.format_duration(policy.keep.total_seconds())
    return f"{whose}: keep {keep}, then {policy.then}"


def parse_keep(text: str) -> timedelta:
    """'90d', '12h', '365d' (settings' durations); at least MIN_KEEP."""
    try:
        keep = timedelta(seconds=settings.parse_duration(text))
    except ValueError as exc:
        raise exceptions.ConfigError(str(exc)) from None
    if keep < MIN_KEEP:
        raise exceptions.ConfigError(
            f"--keep {text}: shorter than {settings.format_duration(MIN_KEEP.total_seconds())};"
            " checkpoints reach the archive about a day after they are written"
        )
    return keep


def check_action(then: str) -> str:
    if then not in ACTIONS:
        raise exceptions.ConfigError(f"--then {then}: use one of {', '.join(ACTIONS)}")
    return then


def _policy(row: asyncpg.Record | Any) -> Policy:
    tenant = row["tenant_id"] if row["scope"] == "tenant" else None
    return Policy(tenant, row["keep"], row["then_action"], row["updated_at"])


def _key(tenant: str | None) -> tuple[str, str]:
    if tenant is not None and not tenant:
        raise exceptions.ConfigError("--tenant: a tenant id cannot be empty")
    return ("default", "") if tenant is None else ("tenant", tenant)


async def load(conn: jobs.Connection) -> Policies:
    found = [_policy(r) for r in await conn.fetch(queries.get("policies_list"))]
    default = next((p for p in found if p.tenant is None), None)
    return Policies(default, {p.tenant: p for p in found if p.tenant is not None})


async def put(conn: jobs.Connection, policy: Policy) -> Policy:
    row = await conn.fetchrow(
        queries.get("policy_set"), *_key(policy.tenant), policy.keep, check_action(policy.then)
    )
    return _policy(row)


async def remove(conn: jobs.Connection, tenant: str | None) -> Policy | None:
    """Remove a tenant's policy (it follows the default again) or the default; the removed
    policy, or None if there was none."""
    row = await conn.fetchrow(queries.get("policy_unset"), *_key(tenant))
    return None if row is None else _policy(row)
