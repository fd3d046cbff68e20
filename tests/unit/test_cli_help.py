from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import pytest
import structlog
from click.testing import CliRunner, Result

from consumer import health, service, settings
from consumer.cli import main as cli

COMMANDS = [
    "run",
    "sweep",
    "migrate",
    "status",
    "check",
    "health",
    "history",
    "conversations",
    "dead-letters",
    "api",
]
TIMES = {"--since", "--until", "--tz"}
PAGES = {"--limit", "--after"}
EXTRA_OPTIONS = {
    "sweep": {"--json"},
    "migrate": {"--json"},
    "status": {"--json", "--limit"},
    "check": {"--json"},
    "health": {"--json", "--min-consumers"},
    "history": {"--json", "--tenant", *TIMES, *PAGES},
    "conversations": {"--json", "--tenant", "--customer", "--user", *TIMES, *PAGES},
    "dead-letters": {"--json", "--all", *PAGES},
    "api": set(),
}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No outer ARCHIVER_* variable leaks in; the CLI's logging setup does not leak out."""
    for name in list(os.environ):
        if name.startswith("ARCHIVER_"):
            monkeypatch.delenv(name)
    saved = structlog.get_config()
    yield
    structlog.reset_defaults()
    structlog.configure(**saved)


@pytest.fixture
def no_servers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every entry point that would reach Redis or PostgreSQL; record any call."""
    called: list[str] = []

    def forbidden(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> NoReturn:
            called.append(name)
            raise AssertionError(f"{name} must not be reached")

        return call

    monkeypatch.setattr(service, "run", forbidden("service.run"))
    monkeypatch.setattr(service, "sweep_once", forbidden("service.sweep_once"))
    monkeypatch.setattr(asyncpg, "connect", forbidden("asyncpg.connect"))
    return called


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.main, args, env=env)


def expected_options(command: str) -> dict[str, str]:
    """Flag -> environment variable of every setting the command declares it uses."""
    expected = {"--debug": "ARCHIVER_DEBUG"}
    for name, info in settings.Settings.model_fields.items():
        extra = info.json_schema_extra
        assert isinstance(extra, dict)
        commands = extra["commands"]
        assert isinstance(commands, list)
        if command in commands:
            expected["--" + name.replace("_", "-")] = f"ARCHIVER_{name.upper()}"
    return expected


def help_options(text: str) -> dict[str, str | None]:
    """Each option block of a --help page: its first long flag -> its [env var: …], if any."""
    section = text.split("Options:", 1)[1]
    blocks: list[str] = []
    for line in section.splitlines():
        if re.match(r"^ {2}-", line):
            blocks.append(line)
        elif blocks and line.startswith(" "):
            blocks[-1] += " " + line.strip()
    found: dict[str, str | None] = {}
    for block in blocks:
        flag = re.search(r"--[\w-]+", block)
        assert flag is not None, block
        env = re.search(r"\[env\s+var:\s+(\w+)\]", " ".join(block.split()))
        found[flag.group(0)] = env.group(1) if env else None
    return found


# --- --help --------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_every_option_with_its_env_var(command: str) -> None:
    result = invoke([command, "--help"])
    assert result.exit_code == 0, result.output
    options = help_options(result.output)
    with_env = {flag: env for flag, env in options.items() if env is not None}
    assert with_env == expected_options(command)
    without_env = set(options) - set(with_env)
    assert without_env == {"--help"} | EXTRA_OPTIONS.get(command, set())


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_each_setting_description(command: str) -> None:
    squeezed = "".join(invoke([command, "--help"]).output.split())  # immune to line wrapping
    for name, info in settings.Settings.model_fields.items():
        if f"ARCHIVER_{name.upper()}" in expected_options(command).values():
            assert info.description is not None
            assert "".join(info.description.split()) in squeezed, name


def test_bool_settings_get_on_and_off_flags() -> None:
    text = invoke(["run", "--help"]).output
    assert "--configure-notifications / --no-configure-notifications" in text
    assert "--allow-pickle / --no-allow-pickle" in text


def test_every_setting_is_reachable_from_some_command() -> None:
    union: set[str] = set()
    for command in COMMANDS:
        union |= set(expected_options(command).values())
    assert union == {f"ARCHIVER_{n.upper()}" for n in settings.Settings.model_fields} | {
        "ARCHIVER_DEBUG"
    }


def test_version() -> None:
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("archiver, version ")


# --- invalid configuration fails before connecting -----------------------------------------------


@pytest.mark.parametrize("command", ["run", "sweep", "migrate"])
def test_invalid_env_config_exits_2_before_connecting(command: str, no_servers: list[str]) -> None:
    result = invoke(
        [command],
        env={"ARCHIVER_SWEEP_INTERVAL": "5h", "ARCHIVER_REDIS_URL": "redis://192.0.2.1:1/0"},
    )
    assert result.exit_code == 2, result.output
    assert "ARCHIVER_SWEEP_INTERVAL" in result.output
    assert no_servers == []


def test_invalid_flag_config_exits_2_naming_the_variable(no_servers: list[str]) -> None:
    result = invoke(["run", "--sweep-interval", "5h"])
    assert result.exit_code == 2
    assert "ARCHIVER_SWEEP_INTERVAL (5h)" in result.output
    assert no_servers == []


def test_malformed_value_exits_2_naming_the_variable(no_servers: list[str]) -> None:
    result = invoke(["run"], env={"ARCHIVER_BATCH_SIZE": "lots"})
    assert result.exit_code == 2
    assert "ARCHIVER_BATCH_SIZE" in result.output
    assert no_servers == []


def test_flag_overrides_an_invalid_env_value(no_servers: list[str]) -> None:
    result = invoke(["run", "--sweep-interval", "30m"], env={"ARCHIVER_SWEEP_INTERVAL": "5h"})
    assert no_servers == ["service.run"]
    assert result.exit_code != 2


# --- check ---------------------------------------------------------------------------------------


def write_state(path: Path, **changes: Any) -> None:
    state = health.State(
        sweep_interval=3600,
        mode="events",
        redis_ok=True,
        database_ok=True,
        last_sweep_ok_at=time.time(),
    )
    for name, value in changes.items():
        setattr(state, name, value)
    health.write(path, state.snapshot())


def test_check_without_health_file_exits_1(tmp_path: Path) -> None:
    result = invoke(["check"], env={"ARCHIVER_HEALTH_FILE": str(tmp_path / "missing.json")})
    assert result.exit_code == 1
    assert "no health file" in result.output


def test_check_of_a_fresh_healthy_file_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    write_state(path, subscribed=True)
    result = invoke(["check"], env={"ARCHIVER_HEALTH_FILE": str(path)})
    assert result.exit_code == 0, result.output
    assert "healthy (events)" in result.output


def test_check_of_events_mode_without_subscription_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    write_state(path)  # subscribed defaults to False: the events-mode listener is down
    result = invoke(["check"], env={"ARCHIVER_HEALTH_FILE": str(path)})
    assert result.exit_code == 1
    assert "keyevent subscription is down" in result.output


def test_check_of_a_stale_file_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    state = health.State(sweep_interval=3600, mode="events", subscribed=True, redis_ok=True,
                         database_ok=True, last_sweep_ok_at=time.time())  # fmt: skip
    snapshot = state.snapshot()
    snapshot["last_run"] = "2000-01-01T00:00:00+00:00"
    health.write(path, snapshot)
    result = invoke(["check"], env={"ARCHIVER_HEALTH_FILE": str(path)})
    assert result.exit_code == 1
    assert "old (limit" in result.output


def test_check_health_file_flag_wins_over_env(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    write_state(path, subscribed=True)
    result = invoke(
        ["check", "--health-file", str(path)],
        env={"ARCHIVER_HEALTH_FILE": str(tmp_path / "missing.json")},
    )
    assert result.exit_code == 0, result.output


# --- erase: usage errors before connecting ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["erase", "--tenant", "acme", "--user", "u", "--customer", "c"], "exactly one"),
        (["erase", "--tenant", "acme"], "exactly one"),
        (["erase", "--customer", "c"], "--tenant"),
        (["erase", "--tenant", "acme", "--customer", ""], "cannot be empty"),
        (["erasures", "--after", "x"], "--after"),
    ],
)
def test_erase_usage_errors_exit_2_before_connecting(args: list[str], says: str) -> None:
    result = invoke([*args, "--database-url", "postgresql://nobody@127.0.0.1:1/x"])
    assert result.exit_code == 2, result.output
    assert says in result.output


def test_erase_without_the_key_is_a_configuration_error() -> None:
    result = invoke(
        [
            "erase",
            "--tenant",
            "acme",
            "--user",
            "u",
            "--database-url",
            "postgresql://x@127.0.0.1:1/x",
        ],
        env={"ARCHIVER_ERASURE_KEY": "short"},
    )
    assert result.exit_code == 2 and "ARCHIVER_ERASURE_KEY" in result.output
