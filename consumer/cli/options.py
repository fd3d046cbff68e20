"""The options commands share, each defined once: settings, --json, times and pages.

* `settings_options("cmd")`: a flag per setting whose `commands` name "cmd" (consumer/settings.py
  is the one source), with its ARCHIVER_* variable, its type (DURATION, INTEGER, URL, PATH…)
  and the setting's own validation, so a bad value names the flag and the variable.
* `json_option`: `--json`, given to the command as `out`, a `terminal.Output`.
* `time_option("--since", ...)` and `tz_option`: times as `times.parse` reads them.
* `page_options(default)`: `--limit N` and `--after CURSOR`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import click
from click.core import ParameterSource
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from consumer import settings, terminal, times, urls

F = TypeVar("F", bound=Callable[..., Any])
TZ = "archiver.tz"


# --- settings ------------------------------------------------------------------------------------


def commands_of(info: FieldInfo) -> list[str]:
    extra = info.json_schema_extra
    return list(extra.get("commands", [])) if isinstance(extra, dict) else []  # type: ignore[arg-type]


def _is_duration(info: FieldInfo) -> bool:
    return any(getattr(m, "func", None) is settings.parse_duration for m in info.metadata)


def metavar_of(info: FieldInfo) -> str:
    if _is_duration(info):
        return "DURATION"
    if urls.is_url_type(info.metadata):
        return "URL"
    return {int: "INTEGER", Path: "PATH", float: "NUMBER"}.get(info.annotation, "TEXT")  # type: ignore[arg-type]


class SettingType(click.ParamType[Any, Any]):
    """A setting's value, checked by the setting's own type and limits (pydantic)."""

    def __init__(self, info: FieldInfo) -> None:
        self.metavar = metavar_of(info)
        self.name = self.metavar.lower()
        typed: Any = info.annotation
        if info.metadata:
            typed = cast(Any, Annotated)[(info.annotation, *info.metadata)]
        self._adapter: TypeAdapter[Any] = TypeAdapter(typed)

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return self.metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self._adapter.validate_python(value)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            self.fail(message[:1].lower() + message[1:], param, ctx)


def shown_default(info: FieldInfo) -> str:
    default = info.default
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "true" if default else "false"
    return settings.format_duration(default) if _is_duration(info) else str(default)


def _option(name: str, info: FieldInfo) -> Callable[[F], F]:
    flag = "--" + name.replace("_", "-")
    common: dict[str, Any] = {
        "default": None,
        "envvar": f"ARCHIVER_{name.upper()}",
        "show_envvar": True,
        "help": f"{info.description} [default: {shown_default(info)}]",
    }
    if info.annotation is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, **common)
    choices = getattr(info.annotation, "__args__", None)
    if choices and all(isinstance(c, str) for c in choices):  # a Literal
        return click.option(flag, name, type=click.Choice(choices), **common)
    return click.option(flag, name, type=SettingType(info), **common)


def settings_options(command: str) -> Callable[[F], F]:
    """Add a flag for every setting the command uses (their values reach it as **values)."""

    def decorate(func: F) -> F:
        for name, info in reversed(settings.Settings.model_fields.items()):
            if command in commands_of(info):
                func = _option(name, info)(func)
        return func

    return decorate


# --- output --------------------------------------------------------------------------------------


def _output(ctx: click.Context, param: click.Parameter, value: bool) -> terminal.Output:
    return terminal.Output(json=value)


def json_option(func: F) -> F:
    """`--json`: the command receives `out`, a terminal.Output, and prints through it."""
    return click.option(
        "--json",
        "out",
        is_flag=True,
        callback=_output,
        help='Print JSON instead (a list: {"items": [...], "next": cursor}).',
    )(func)


# --- times ---------------------------------------------------------------------------------------


class TimeType(click.ParamType[Any, Any]):
    """A time as `times.parse` reads it; zone-less input in the zone of --tz."""

    name = "time"

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, times.Ago | datetime):
            return value
        zone = ctx.meta.get(TZ, UTC) if ctx is not None else UTC
        try:
            return times.parse(str(value), zone)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _zone(ctx: click.Context, param: click.Parameter, value: str | None) -> tzinfo:
    try:
        zone = times.zone(value) if value else UTC
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    ctx.meta[TZ] = zone
    return zone


def tz_option(func: F) -> F:
    """`--tz ZONE`: the zone of times typed without one (UTC by default)."""
    return click.option(
        "--tz",
        "tz",
        metavar="ZONE",
        is_eager=True,
        callback=_zone,
        expose_value=False,
        help="Zone of times given without one: a name (Europe/Madrid) or an offset"
        " (+02:00). [default: UTC]",
    )(func)


def time_option(flag: str, help: str) -> Callable[[F], F]:
    return click.option(
        flag,
        type=TimeType(),
        help=f"{help} ISO 8601 (2026-12-07T17:42:20Z, 2026-12-07) or a duration ago (1h, 7d).",
    )


# --- pages ---------------------------------------------------------------------------------------


def page_options(default: int, maximum: int = 10_000) -> Callable[[F], F]:
    """`--limit N` and `--after CURSOR` (the `next` of the previous page)."""

    def decorate(func: F) -> F:
        func = click.option(
            "--after",
            "cursor",
            metavar="CURSOR",
            help="Continue after a previous page (its `more: --after` cursor, or JSON `next`).",
        )(func)
        return click.option(
            "--limit",
            type=click.IntRange(1, maximum),
            default=default,
            show_default=True,
            help="Rows per page.",
        )(func)

    return decorate


# --- sub-commands --------------------------------------------------------------------------------


def inherit(ctx: click.Context) -> dict[str, Any]:
    """A sub-command's values over its group's: a flag given after the sub-command wins, then
    one given before it, then the environment (read by both)."""
    parent = dict(ctx.parent.params) if ctx.parent is not None else {}
    own = {
        name: value
        for name, value in ctx.params.items()
        if name not in parent or ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }
    return parent | own
