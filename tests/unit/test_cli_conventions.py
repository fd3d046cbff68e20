"""The conventions every `archiver` command follows (see consumer/cli/__init__.py): one error
handler and its exit codes, --json wherever data is printed, typed options named in errors,
options of a group given after its sub-command, and warnings for misspelt variables. A command
added later is held to them by these tests without any change here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import asyncpg
import click
import pytest
import redis.exceptions as redis_errors
import structlog
from click.testing import CliRunner, Result

from consumer import exceptions, settings
from consumer.cli import commands, exits, options
from consumer.cli import main as cli
from tests.unit.test_docs_tables import ALL, RUNNABLE

PRINTS_NO_DATA = {("run",), ("demo",), ("api",)}  # logs, the demo's own show, or a server


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("ARCHIVER_"):
            monkeypatch.delenv(name)
    saved = structlog.get_config()
    yield
    structlog.reset_defaults()
    structlog.configure(**saved)


def invoke(group: click.Command, args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(group, args, env=env)


# --- every command -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(ALL), ids=" ".join)
def test_every_command_has_the_error_handler_and_debug(path: tuple[str, ...]) -> None:
    command = ALL[path]
    assert isinstance(command, commands.Command | commands.Group)
    assert "--debug" in {opt for p in command.params for opt in getattr(p, "opts", [])}


@pytest.mark.parametrize("path", sorted(set(RUNNABLE) - PRINTS_NO_DATA), ids=" ".join)
def test_every_command_that_prints_data_has_json(path: tuple[str, ...]) -> None:
    params = {p.name: p for p in RUNNABLE[path].params}
    assert "out" in params, "use @options.json_option"
    assert params["out"].opts == ["--json"]


@pytest.mark.parametrize(
    ("name", "metavar"),
    [("checkpoint_ttl", "DURATION"), ("batch_size", "INTEGER"), ("redis_url", "URL"),
     ("database_url", "URL"), ("health_file", "PATH"), ("key_pattern", "TEXT")],
)  # fmt: skip
def test_settings_are_typed_from_their_fields(name: str, metavar: str) -> None:
    assert options.metavar_of(settings.Settings.model_fields[name]) == metavar


def test_no_duration_integer_or_url_setting_is_shown_as_text() -> None:
    text = invoke(cli.main, ["run", "--help"]).output
    for flag in ("--checkpoint-ttl DURATION", "--workers INTEGER", "--redis-url URL"):
        assert flag in text
    assert "--checkpoint-ttl TEXT" not in text


# --- errors and exit codes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (exceptions.ConfigError("x"), 2),
        (exceptions.UsageError("x"), 2),
        (exceptions.PendingMigrationsError(), 2),
        (exceptions.NotFoundError("x"), 1),
        (exceptions.ArchiverError("x"), 1),
        (exceptions.UnreachableError("x"), 3),
        (asyncpg.UndefinedTableError("relation does not exist"), 2),
        (asyncpg.InsufficientPrivilegeError("denied"), 2),
        (asyncpg.InvalidPasswordError("bad password"), 3),
        (redis_errors.NoPermissionError("NOPERM"), 2),
        (redis_errors.ConnectionError("refused"), 3),
        (redis_errors.InvalidResponse("Protocol error, got 'H'"), 3),
        (ConnectionRefusedError(111, "refused"), 3),
        (KeyboardInterrupt(), 130),
    ],
)
def test_errors_we_understand_have_a_code(error: BaseException, code: int) -> None:
    failure = exits.failure_of(error)
    assert failure is not None
    assert failure.code == code
    assert "\n" not in failure.message


def test_an_unexpected_error_is_a_bug() -> None:
    assert exits.failure_of(RuntimeError("boom")) is None


def test_reaching_names_the_url_without_its_password() -> None:
    url = "postgresql://app:s3cret@db.example:5432/archive"
    with pytest.raises(exceptions.UnreachableError) as caught, exits.reaching_postgres(url):
        raise ConnectionRefusedError(111, "Connection refused")
    message = str(caught.value)
    assert "postgresql://app:***@db.example:5432/archive" in message
    assert "s3cret" not in message
    assert "--database-url" in message


def toy(raise_: BaseException | None = None, returns: Any = None) -> commands.Group:
    @click.group(cls=commands.Group)
    def group() -> None:
        pass

    @group.command("go")
    def go() -> Any:
        if raise_ is not None:
            raise raise_
        return returns

    return group


def test_a_raised_error_is_one_line_and_its_code() -> None:
    result = invoke(toy(exceptions.NotFoundError("no such thing: try another")), ["go"])
    assert result.exit_code == 1
    assert result.stderr == "group go: no such thing: try another\n"
    assert result.stdout == ""


def test_a_bug_shows_its_traceback_and_says_so() -> None:
    result = invoke(toy(RuntimeError("boom")), ["go"])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("group go: unexpected error, probably a bug")


@pytest.mark.parametrize("args", [["--debug", "go"], ["go", "--debug"]])
def test_debug_adds_the_traceback(args: list[str]) -> None:
    result = invoke(toy(exceptions.UnreachableError("down")), args)
    assert result.exit_code == 3
    assert "Traceback" in result.stderr
    assert (
        "Traceback"
        in invoke(toy(exceptions.UnreachableError("down")), ["go"], {"ARCHIVER_DEBUG": "1"}).stderr
    )


def test_a_returned_exit_code_is_the_exit_code() -> None:
    assert invoke(toy(returns=exits.ExitCode.FAILED), ["go"]).exit_code == 1
    assert invoke(toy(returns=None), ["go"]).exit_code == 0


def test_a_usage_error_is_one_line_pointing_at_help() -> None:
    result = invoke(toy(), ["go", "--nope"])
    assert result.exit_code == 2
    assert result.stderr == "group go: No such option '--nope'. (see `group go --help`)\n"


def test_stored_text_in_an_error_is_made_visible() -> None:
    result = invoke(toy(exceptions.NotFoundError("no conversation 'a\x1b[2J\u202eb'")), ["go"])
    assert result.stderr == "group go: no conversation 'a\\x1b[2J\\u202eb'\n"


# --- typed values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--sweep-interval", "5x"], "Invalid value for '--sweep-interval' (env var: 'ARCHIVER_SWEEP_INTERVAL'): not a duration"),
        (["run", "--workers", "0"], "Invalid value for '--workers' (env var: 'ARCHIVER_WORKERS'): input should be greater than or equal to 1"),
        (["run", "--redis-url", "localhost:6379"], "Invalid value for '--redis-url' (env var: 'ARCHIVER_REDIS_URL'): not a Redis URL"),
        (["conversations", "--since", "tomorrow"], "Invalid value for '--since': not a time: 'tomorrow'"),
        (["conversations", "--tz", "Mars/Base"], "Invalid value for '--tz': unknown time zone 'Mars/Base'"),
        (["conversations", "--limit", "0"], "Invalid value for '--limit'"),
    ],
)  # fmt: skip
def test_a_bad_value_names_its_flag(args: list[str], expected: str) -> None:
    result = invoke(cli.main, args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"archiver {args[0]}: {expected}"), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_password_in_a_bad_url_is_not_echoed() -> None:
    result = invoke(cli.main, ["migrate", "--database-url", "mysql://app:s3cret@h/db"])
    assert result.exit_code == 2
    assert "app:***@h" in result.stderr
    assert "s3cret" not in result.stderr


# --- a group's options after its sub-command -----------------------------------------------------


def nested() -> tuple[commands.Group, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    @click.group(cls=commands.Group)
    def root() -> None:
        pass

    @root.group("letters", invoke_without_command=True)
    @click.option("--where", envvar="ARCHIVER_WHERE")
    def letters(where: str | None) -> None:
        pass

    @letters.command("replay")
    @click.option("--where", envvar="ARCHIVER_WHERE")
    @click.pass_context
    def replay(ctx: click.Context, where: str | None) -> None:
        seen.append(options.inherit(ctx))

    return root, seen


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["letters", "--where", "a", "replay"], {}, "a"),
        (["letters", "replay", "--where", "b"], {}, "b"),
        (["letters", "--where", "a", "replay", "--where", "b"], {}, "b"),
        (["letters", "replay"], {"ARCHIVER_WHERE": "e"}, "e"),
        (["letters", "--where", "a", "replay"], {"ARCHIVER_WHERE": "e"}, "a"),
    ],
)
def test_a_flag_after_the_sub_command_wins_then_before_then_the_environment(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    root, seen = nested()
    assert invoke(root, args, env).exit_code == 0
    assert seen[-1]["where"] == expected


# --- ARCHIVER_* variables ------------------------------------------------------------------------


def test_every_option_and_setting_variable_is_known() -> None:
    known = commands.known_variables(cli.main)
    assert {"ARCHIVER_SWEEP_INTERVAL", "ARCHIVER_DEMO_SEED", "ARCHIVER_DEBUG"} <= known


def test_unknown_variables_but_the_test_harness_ones() -> None:
    environ = {"ARCHIVER_SWEEP_INTERVL": "5h", "ARCHIVER_TEST_PG_BIN": "/x", "ARCHIVER_WORKERS": "2",
               "HOME": "/root"}  # fmt: skip
    assert commands.unknown_variables(cli.main, environ) == ["ARCHIVER_SWEEP_INTERVL"]


def test_a_misspelt_variable_is_warned_about_with_a_suggestion(tmp_path: Any) -> None:
    result = invoke(
        cli.main, ["check"],
        {"ARCHIVER_SWEEP_INTERVL": "5h", "ARCHIVER_HEALTH_FILE": str(tmp_path / "h.json")},
    )  # fmt: skip
    assert result.stderr.splitlines()[0] == (
        "archiver: warning: ARCHIVER_SWEEP_INTERVL is not a setting and is ignored"
        " (did you mean ARCHIVER_SWEEP_INTERVAL?)"
    )
