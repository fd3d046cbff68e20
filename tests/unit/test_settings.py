from __future__ import annotations

import os
from pathlib import Path

import pytest

from consumer import settings
from consumer.exceptions import ArchiverError, ConfigError
from consumer.settings import format_duration, load, parse_duration, window_problems


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ARCHIVER_* variable of the outer environment leaks into a test."""
    for name in list(os.environ):
        if name.startswith("ARCHIVER_"):
            monkeypatch.delenv(name)


# --- parse_duration / format_duration ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("15m", 900.0),
        ("23h", 82800.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("90", 90.0),
        ("0.05", 0.05),
        (" 10 s ", 10.0),
        (42, 42.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_accepts_units_and_plain_numbers(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "1h30m", "-5s", "s", "5 hours", "1e3", "1,5s"])
def test_parse_duration_rejects_malformed_strings(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (86400.0, "24h"),
        (172800.0, "2d"),
        (82800.0, "23h"),
        (3600.0, "1h"),
        (900.0, "15m"),
        (90.0, "90s"),
        (30.0, "30s"),
        (0.05, "0.05s"),
        (0.0, "0s"),
    ],
)
def test_format_duration_uses_largest_whole_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.25, 1.0, 30.0, 90.0, 900.0, 5400.0, 82800.0, 86400.0])
def test_format_then_parse_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# --- load(): environment and overrides -----------------------------------------------------------


def test_defaults_are_valid_and_match_the_documented_window() -> None:
    s = load()
    assert (s.checkpoint_ttl, s.archive_after, s.sweep_interval) == (86400.0, 82800.0, 3600.0)
    assert s.buffer == 3600.0
    assert window_problems(s) == []


def test_demo_scale_configuration_is_valid() -> None:
    s = load(checkpoint_ttl="30s", archive_after="15s", sweep_interval="10s")
    assert (s.checkpoint_ttl, s.archive_after, s.sweep_interval) == (30.0, 15.0, 10.0)
    assert window_problems(s) == []


def test_load_reads_archiver_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVER_CHECKPOINT_TTL", "2d")
    monkeypatch.setenv("ARCHIVER_ARCHIVE_AFTER", "36h")
    monkeypatch.setenv("ARCHIVER_SWEEP_INTERVAL", "30m")
    monkeypatch.setenv("ARCHIVER_BATCH_SIZE", "17")
    monkeypatch.setenv("ARCHIVER_ALLOW_PICKLE", "true")
    monkeypatch.setenv("ARCHIVER_TIMEZONE", "Europe/Madrid")
    monkeypatch.setenv("ARCHIVER_HEALTH_FILE", "/var/run/h.json")
    s = load()
    assert s.checkpoint_ttl == 172800.0
    assert s.archive_after == 129600.0
    assert s.sweep_interval == 1800.0
    assert s.batch_size == 17
    assert s.allow_pickle is True
    assert s.zone.key == "Europe/Madrid"
    assert s.health_file == Path("/var/run/h.json")


def test_explicit_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVER_BATCH_SIZE", "17")
    monkeypatch.setenv("ARCHIVER_SWEEP_INTERVAL", "30m")
    s = load(batch_size=99, sweep_interval="10m")
    assert s.batch_size == 99
    assert s.sweep_interval == 600.0


def test_none_overrides_fall_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI passes None for every flag not given: the environment must still apply."""
    monkeypatch.setenv("ARCHIVER_BATCH_SIZE", "17")
    assert load(batch_size=None).batch_size == 17


def test_settings_are_frozen() -> None:
    s = load()
    with pytest.raises(ValueError, match="frozen"):
        s.batch_size = 1


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(ConfigError, match="ARCHIVER_NO_SUCH_OPTION: Extra inputs"):
        load(no_such_option=1)


def test_bad_duration_in_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVER_CLAIM_TTL", "two minutes")
    with pytest.raises(ConfigError, match="ARCHIVER_CLAIM_TTL: not a duration"):
        load()


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "UTC+25", "../etc/passwd"])
def test_unknown_timezone_is_rejected(zone: str) -> None:
    with pytest.raises(ConfigError, match=r"ARCHIVER_TIMEZONE: unknown time zone"):
        load(timezone=zone)


def test_config_error_is_raised_from_env_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHIVER_TIMEZONE", "Nowhere/Nothing")
    with pytest.raises(ConfigError, match="Nowhere/Nothing"):
        load()


# --- the archive window --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        pytest.param(
            {"checkpoint_ttl": "1h", "archive_after": "1h", "sweep_interval": "10m"},
            ["ARCHIVER_ARCHIVE_AFTER", "ARCHIVER_CHECKPOINT_TTL"],
            id="archive-after-equals-ttl",
        ),
        pytest.param(
            {"checkpoint_ttl": "1h", "archive_after": "2h", "sweep_interval": "10m"},
            ["ARCHIVER_ARCHIVE_AFTER", "ARCHIVER_CHECKPOINT_TTL"],
            id="archive-after-exceeds-ttl",
        ),
        pytest.param(
            {"sweep_interval": "2h"},
            ["ARCHIVER_SWEEP_INTERVAL"],
            id="interval-exceeds-buffer",
        ),
        pytest.param(
            {"checkpoint_ttl": "2h", "archive_after": "10m", "sweep_interval": "20m"},
            ["ARCHIVER_SWEEP_INTERVAL", "ARCHIVER_ARCHIVE_AFTER"],
            id="interval-exceeds-archive-after",
        ),
        pytest.param(
            {
                "checkpoint_ttl": "30s",
                "archive_after": "15s",
                "sweep_interval": "10s",
                "deadline_poll": "6s",
            },
            ["ARCHIVER_DEADLINE_POLL"],
            id="deadline-poll-over-a-third-of-buffer",
        ),
    ],
)
def test_unsafe_window_raises_config_error_naming_variables(
    overrides: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**overrides)
    for name in names:
        assert name in str(caught.value)


def test_window_message_shows_the_offending_values() -> None:
    with pytest.raises(ConfigError) as caught:
        load(sweep_interval="5h")
    message = str(caught.value)
    assert "ARCHIVER_SWEEP_INTERVAL (5h)" in message
    assert "(1h)" in message  # the buffer, 1d - 23h


def test_sweep_interval_equal_to_buffer_is_allowed() -> None:
    s = load(checkpoint_ttl="2h", archive_after="1h", sweep_interval="1h")
    assert window_problems(s) == []


def test_window_problems_lists_every_independent_problem() -> None:
    """Validation stops at load(); window_problems itself reports a bad interval and poll."""
    s = load().model_copy(update={"sweep_interval": 7200.0, "deadline_poll": 1500.0})
    problems = window_problems(s)
    assert len(problems) == 2
    assert problems[0].startswith("ARCHIVER_SWEEP_INTERVAL")
    assert problems[1].startswith("ARCHIVER_DEADLINE_POLL")


def test_config_error_is_an_archiver_error() -> None:
    with pytest.raises(ArchiverError):
        load(checkpoint_ttl="1h", archive_after="1h")


def test_every_field_declares_the_commands_that_use_it() -> None:
    from consumer.cli import main as cli

    known = set(cli.main.commands)
    for name, info in settings.Settings.model_fields.items():
        extra = info.json_schema_extra
        assert isinstance(extra, dict), name
        commands = extra["commands"]
        assert isinstance(commands, list), name
        assert commands, name
        assert set(commands) <= known, name
        assert info.description, name
