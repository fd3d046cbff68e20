"""The retention, jobs and partitions commands without servers: every option with its
environment variable, and bad input refused (exit 2) before anything connects."""

from __future__ import annotations

import pytest

from tests.unit.test_cli_help import expected_options, help_options, invoke, isolated, no_servers

__all__ = ["isolated", "no_servers"]  # fixtures, used by name

# (words to invoke, the settings group their flags come from, options besides the settings)
COMMANDS = [
    (["retention", "set"], "retention", {"--default", "--tenant", "--keep", "--then", "--json"}),
    (["retention", "unset"], "retention", {"--default", "--tenant", "--json"}),
    (["retention", "show"], "retention", {"--json"}),
    (["retention", "apply"], "retention", {"--dry-run", "--json"}),
    (["jobs"], "jobs", {"--json"}),
    (["partitions"], "partitions", {"--json"}),
    (["jobs", "run"], "jobs", {"--json"}),
]


@pytest.mark.parametrize(("words", "group", "extra"), COMMANDS)
def test_help_lists_every_option_with_its_env_var(
    words: list[str], group: str, extra: set[str]
) -> None:
    result = invoke([*words, "--help"])
    assert result.exit_code == 0, result.output
    options = help_options(result.output)
    assert {flag: env for flag, env in options.items() if env} == expected_options(group)
    assert {flag for flag, env in options.items() if not env} == {"--help"} | extra


def test_jobs_settings_reach_run_too() -> None:
    for flag in ("--retention-schedule", "--partitions-schedule", "--owner-database-url",
                 "--job-lease", "--run-jobs"):  # fmt: skip
        assert flag in invoke(["run", "--help"]).output, flag


@pytest.mark.parametrize(
    "args",
    [
        ["retention", "set", "--keep", "30d"],
        ["retention", "set", "--default", "--tenant", "acme", "--keep", "30d"],
        ["retention", "set", "--default", "--keep", "3h"],
        ["retention", "set", "--default", "--keep", "soon"],
        ["retention", "set", "--default", "--keep", "30d", "--then", "archive"],
        ["retention", "set", "--tenant", "", "--keep", "30d"],
        ["retention", "unset"],
        ["jobs", "run", "no-such-job"],
        ["retention", "show", "--retention-schedule", "at two"],
    ],
)
def test_bad_input_exits_2_before_connecting(args: list[str], no_servers: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert no_servers == []
    assert "Traceback" not in result.output


def test_an_invalid_schedule_in_the_environment_names_the_variable(
    no_servers: list[str],
) -> None:
    result = invoke(["jobs"], env={"ARCHIVER_RETENTION_SCHEDULE": "every night"})
    assert result.exit_code == 2
    assert "ARCHIVER_RETENTION_SCHEDULE" in result.output
    assert "not a cron expression" in result.output
