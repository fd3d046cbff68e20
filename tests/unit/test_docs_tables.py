"""The README's and the operator's guide's tables say what the commands really do: every
command is in the README's command table with flags it really has, every option a command has
beyond the settings is there, the settings tables match consumer/settings.py, and the exit
codes are the ones `exits` defines."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest

from consumer import settings
from consumer.cli import exits, options
from consumer.cli import main as cli
from tests.docs import OPERATIONS, README, table


def commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


ALL = dict(commands(cli.main))
# What a person runs: every command, and a group only if it does something itself (as
# `dead-letters` lists); a group that only holds sub-commands (`retention set`, ...) is not.
RUNNABLE = {
    path: command
    for path, command in ALL.items()
    if not isinstance(command, click.Group) or command.invoke_without_command
}


def documented() -> dict[tuple[str, ...], str]:
    """README command table: command path -> the usage cell."""
    found = {}
    for cells in table(README, "| command | what it does |"):
        usage = cells[0].strip("`")
        words = usage.split()[1:]
        path = tuple(
            w
            for w in words[
                : next(
                    (i for i, w in enumerate(words) if not re.fullmatch(r"[a-z][a-z-]*", w)),
                    len(words),
                )
            ]
        )
        found[path] = usage
    return found


def flags_of(command: click.Command) -> set[str]:
    return {
        opt
        for p in command.params
        if isinstance(p, click.Option)
        for opt in p.opts + p.secondary_opts
    }


def test_every_command_has_a_row_and_every_row_a_command() -> None:
    assert set(documented()) == set(RUNNABLE)


@pytest.mark.parametrize("path", sorted(RUNNABLE), ids=" ".join)
def test_the_flags_in_the_readme_are_the_commands_own(path: tuple[str, ...]) -> None:
    usage = documented()[path]
    command = ALL[path]
    own = flags_of(command)
    if len(path) > 1:  # a sub-command also takes its group's options, before it
        own |= flags_of(ALL[path[:-1]])
    for flag in re.findall(r"--[a-z][a-z-]*", usage):
        assert flag in own, f"{' '.join(path)}: {flag}"
    arguments = [
        p.name.upper() for p in command.params if isinstance(p, click.Argument) and p.required
    ]
    placeholders = [w for w in usage.split() if re.fullmatch(r"[A-Z_]+", w)]
    assert placeholders == arguments


@pytest.mark.parametrize("path", sorted(RUNNABLE), ids=" ".join)
def test_every_option_beyond_the_settings_is_in_the_readme(path: tuple[str, ...]) -> None:
    usage = documented()[path]
    for param in ALL[path].params:
        if isinstance(param, click.Option) and not param.envvar and param.opts[0] != "--help":
            assert param.opts[0] in usage, f"{' '.join(path)}: {param.opts[0]}"


def test_the_readme_settings_table_shows_the_real_defaults() -> None:
    fields = settings.Settings.model_fields
    for variable, default, _ in table(README, "| variable | default | meaning |"):
        name = variable.strip("`").removeprefix("ARCHIVER_").lower()
        assert name in fields, variable
        shown = options.shown_default(fields[name])
        assert default.strip("`") == shown or (shown == "false" and default == "off"), variable


def operations_settings_rows() -> list[list[str]]:
    """The operator's guide's settings table as consumer/settings.py generates it."""
    return [
        [f"`ARCHIVER_{name.upper()}`", f"`{options.shown_default(info)}`",
         ", ".join(options.commands_of(info)), info.description or ""]
        for name, info in settings.Settings.model_fields.items()
    ]  # fmt: skip


def test_the_operations_settings_table_is_generated_from_the_settings() -> None:
    assert (
        table(OPERATIONS, "| variable | default | used by | meaning |")
        == operations_settings_rows()
    )


def test_the_readme_exit_codes_are_the_real_ones() -> None:
    codes = [int(cells[0]) for cells in table(README, "| code | meaning |")]
    assert codes == [int(code) for code in exits.ExitCode]
