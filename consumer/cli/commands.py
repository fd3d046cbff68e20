"""The click classes every `archiver` command is made of: one error handler for all of them.

`Group` is the root (`archiver`) and every sub-group; `@group.command()` makes a `Command`.
Both add `--debug` and handle errors the same way:

* an error a command raises becomes one line on stderr, `archiver COMMAND: what happened:
  what to do`, and an exit code (`exits`); a traceback only with `--debug` (or
  ARCHIVER_DEBUG=1), or for an error nobody anticipated (a bug);
* a command may return an `exits.ExitCode` (or an int) to set its exit code;
* a usage error (bad flag or value) is one line too, naming the flag, with exit code 2;
* ARCHIVER_* variables that no setting and no option reads are warned about once per run.
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from consumer import settings, terminal
from consumer.cli import exits

DEBUG = "archiver.debug"
ALLOWED_PREFIXES = ("ARCHIVER_TEST_",)  # the test and demo harnesses' own variables


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[DEBUG] = True


def _debug_option() -> click.Option:
    return click.Option(
        ["--debug"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        envvar="ARCHIVER_DEBUG",
        show_envvar=True,
        callback=_set_debug,
        help="On an error, print its traceback too.",
    )


def report(exc: BaseException, ctx: click.Context | None) -> int:
    """Print one line for `exc` (and its traceback if asked or unexpected); its exit code."""
    failure = exits.failure_of(exc)
    if failure is None or (ctx is not None and ctx.meta.get(DEBUG)):
        traceback.print_exception(exc, file=sys.stderr)
    if failure is None:
        failure = exits.Failure(
            exits.ExitCode.FAILED,
            f"unexpected error, probably a bug: {type(exc).__name__}: {exc}"
            " (run again with --debug for the traceback, and report it)",
        )
    where = ctx.command_path if ctx is not None else "archiver"
    click.echo(f"{where}: {terminal.plain(failure.message)}", err=True)
    return int(failure.code)


class _Handled(click.Command):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_debug_option())

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise  # click's: usage errors, --help, Ctrl-C, and a reader that went away (| head)
        except Exception as exc:
            return report(exc, ctx)


class Command(_Handled):
    """An `archiver` command (see the module docstring)."""


class Group(_Handled, click.Group):
    """`archiver` and its sub-groups: their commands are `Command`s, their groups `Group`s."""

    command_class = Command
    group_class = type

    def invoke(self, ctx: click.Context) -> Any:
        if ctx.parent is None:
            warn_unknown_variables(ctx.command, os.environ)
        return super().invoke(ctx)

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Run as a program: exit with the command's code, one line for a usage error."""
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            code = exc.exit_code
        except click.ClickException as exc:
            code = report(_with_help_hint(exc), getattr(exc, "ctx", None))
        except click.Abort as exc:
            code = report(exc, None)
        sys.exit(code if isinstance(code, int) else 0)


def _with_help_hint(exc: click.ClickException) -> click.ClickException:
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        hint = f"{exc.format_message()} (see `{exc.ctx.command_path} --help`)"
        return click.UsageError(hint, exc.ctx)
    return exc


# --- ARCHIVER_* variables ------------------------------------------------------------------------


def _commands(command: click.Command) -> Iterator[click.Command]:
    yield command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _commands(sub)


def known_variables(root: click.Command) -> set[str]:
    """Every ARCHIVER_* variable a setting or an option of any command reads."""
    found = {f"ARCHIVER_{name.upper()}" for name in settings.Settings.model_fields}
    for command in _commands(root):
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            found.update([envvar] if isinstance(envvar, str) else envvar or [])
    return found


def unknown_variables(root: click.Command, environ: dict[str, str] | os._Environ[str]) -> list[str]:
    known = known_variables(root)
    return sorted(
        name
        for name in environ
        if name.startswith("ARCHIVER_")
        and name not in known
        and not name.startswith(ALLOWED_PREFIXES)
    )


def warn_unknown_variables(root: click.Command, environ: os._Environ[str]) -> None:
    known = sorted(known_variables(root))
    for name in unknown_variables(root, environ):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        click.echo(f"archiver: warning: {name} is not a setting and is ignored{hint}", err=True)
