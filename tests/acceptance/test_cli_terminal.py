"""Every command as an operator runs it: on a pseudo-terminal 80 and 200 columns wide and piped,
against a real private database holding hostile content (rich markup, ANSI and OSC escapes,
control characters, bidi overrides, a 10,000-character id). Whatever is stored reaches the
terminal only as text; ids and cursors are never cut or wrapped; exit codes are the
documented ones; errors are one line on stderr."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from consumer import terminal
from tests import docs
from tests.terminals import SGR, Ran, on_terminal, piped

LONG_ID = "wa-msg-" + "0123456789" * 1000
MARKUP_ID = "conv-[/]-1"
ESCAPE_ID = "conv-\x1b]0;pwned\x07-2"
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
CONVERSATIONS = [
    ("acme", MARKUP_ID, "cust-[link=https://evil.example/login]x[/link]", "user-\x1b[2J"),
    ("acme", ESCAPE_ID, "cust-2", None),
    ("acme", LONG_ID, "cust-long", "user-\u202eevil"),
]
MARKUP_MESSAGES = [
    ("user", "[/]"),
    ("assistant", "[/bold] and [red]not red[/red] :smile:"),
    ("user", "[link=https://evil.example/login]click me[/link]"),
    (
        "assistant",
        "\x1b[2J\x1b[Hcleared?\x1b]0;title\x07 \x1b]8;;https://evil.example\x1b\\l\x1b]8;;\x1b\\",
    ),
    ("tool", "ctl \x01\x08\x7f\x9b31m \u202eevil\u202c\ttab\nsecond line\r\nthird"),
    ("assistant", "word " * 60),
]
SUMMARY = "[summary] earlier messages, summarized"
DEAD_KEYS = [
    "langgraph:checkpoint:[/red]\x1b[31m:1700000000",
    f"langgraph:checkpoint:{LONG_ID}:1700000000",
]
HEARTBEAT_MEMBER = "evil-[/]\x1b[2J:1"
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


# --- the hostile archive -------------------------------------------------------------------------


async def insert_messages(conn: asyncpg.Connection, conversation: tuple[str, str, str, str | None],
                          messages: list[tuple[str, str, dict[str, object]]]) -> None:  # fmt: skip
    tenant, conversation_id, customer, user = conversation
    await conn.execute("SELECT archiver_ensure_partition($1)", T0)
    rows = [
        (tenant, customer, user, conversation_id, T0 + timedelta(seconds=i), role, content,
         orjson.dumps(metadata).decode(), f"k{i}", f"src:{conversation_id}")
        for i, (role, content, metadata) in enumerate(messages)
    ]  # fmt: skip
    await conn.executemany(
        """INSERT INTO conversation_history (tenant_id, customer_id, user_id, conversation_id,
           "timestamp", message_role, message_content, metadata, message_key, source_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)""",
        rows,
    )
    end = T0 + timedelta(seconds=len(messages) - 1)
    await conn.execute(
        """INSERT INTO conversations (tenant_id, conversation_id, customer_id, user_id,
           started_at, ended_at) VALUES ($1, $2, $3, $4, $5, $6)""",
        tenant, conversation_id, customer, user, T0, end,
    )  # fmt: skip


async def fill(conn: asyncpg.Connection) -> None:
    plain: dict[str, object] = {}
    markup = [(role, content, plain) for role, content in MARKUP_MESSAGES]
    await insert_messages(conn, CONVERSATIONS[0], [*markup, ("system", SUMMARY, {"summary": True})])
    many = [("user" if i % 2 else "assistant", f"message {i}", plain) for i in range(120)]
    await insert_messages(conn, CONVERSATIONS[1], many)
    await insert_messages(
        conn, CONVERSATIONS[2], [("user", "hi", plain), ("assistant", "hello", plain)]
    )
    for key in DEAD_KEYS:
        await conn.execute(
            "INSERT INTO archive_dead_letters (source_key, digest, raw, error) VALUES ($1, $2, $3, $4)",
            key, key[:40], b"{", "bad [bold]json\x1b]0;x\x07 at line 1",
        )  # fmt: skip
    await conn.execute(
        """INSERT INTO archive_runs (kind, host, started_at, finished_at, status)
           VALUES ('sweep', $1, $2, $3, 'ok')""",
        "host-[/]\x1b[2J", T0, T0 + timedelta(seconds=2),
    )  # fmt: skip


async def beat(redis: aioredis.Redis) -> None:
    state = {"host": "evil-[/]\x1b[2J", "pid": 1, "status": "healthy", "mode": "events",
             "problems": ["[red]x\x1b[2J"], "started_at": "2026-11-01T10:00:00Z", "ttl_ms": 60_000}  # fmt: skip
    await redis.set(f"archiver:heartbeat:{HEARTBEAT_MEMBER}", orjson.dumps(state), px=60_000)
    await redis.zadd("archiver:heartbeats", {HEARTBEAT_MEMBER: 0})


@pytest.fixture
async def hostile(
    env: dict[str, str], db: asyncpg.Connection, redis: aioredis.Redis
) -> dict[str, str]:
    await fill(db)
    await beat(redis)
    return env


@pytest.fixture
def env(redis_url: str, database_url: str, tmp_path: Path) -> dict[str, str]:
    """Settings for the private servers, and none of the outer terminal's preferences."""
    outer = {k: v for k, v in os.environ.items()
             if not k.startswith(("ARCHIVER_", "NO_COLOR", "FORCE_COLOR", "TTY_", "CLICOLOR"))
             and k not in ("COLUMNS", "LINES")}  # fmt: skip
    return outer | {
        "ARCHIVER_REDIS_URL": redis_url,
        "ARCHIVER_DATABASE_URL": database_url,
        "ARCHIVER_HEALTH_FILE": str(tmp_path / "health.json"),
        "ARCHIVER_LOG_FORMAT": "json",
        "TERM": "xterm-256color",
    }


# --- running a command ---------------------------------------------------------------------------


MODES = ["80", "200", "piped"]


def run(mode: str, env: dict[str, str], *args: str) -> Ran:
    return piped(env, *args) if mode == "piped" else on_terminal(env, int(mode), *args)


# --- what holds for every output -----------------------------------------------------------------


def assert_only_text(ran: Ran) -> None:
    """Nothing but text and style codes on stdout; one line (or none) on stderr."""
    assert "\x1b" not in ran.text, repr(ran.text[:2000])
    assert not UNSAFE.search(ran.text.replace("\n", "")), repr(ran.text[:2000])
    assert "\x1b]" not in ran.stdout  # no OSC: no hyperlink, no window title
    assert not UNSAFE.search(ran.stderr.replace("\n", ""))
    assert len([line for line in ran.stderr.splitlines() if not line.startswith("{")]) <= 1


def unbreakable(env: dict[str, str]) -> list[str]:
    """Values printed whole even when wider than the terminal (which then folds them)."""
    values = [LONG_ID, HEARTBEAT_MEMBER, *DEAD_KEYS, env["ARCHIVER_HEALTH_FILE"],
              env["ARCHIVER_DATABASE_URL"]]  # fmt: skip
    for conversation in CONVERSATIONS:
        values += [v for v in conversation if v]
    return [terminal.plain(v) for v in values]


def assert_fits(ran: Ran, mode: str, env: dict[str, str]) -> None:
    """On a terminal, a line is wider than it only for a value that must stay whole (an id, a
    key, a path, a cursor), and then by no more than that value."""
    if mode == "piped":
        assert SGR.search(ran.stdout) is None, "styles when piped"
        return
    whole = unbreakable(env)
    for line in ran.text.splitlines():
        if len(line) > int(mode) and not line.startswith("more: --after "):
            longest = max((v for v in whole if v in line), key=len, default="")
            assert len(line) - len(longest) <= int(mode), line[:300]


def shown(value: str) -> str:
    return terminal.plain(value)


def check(ran: Ran, mode: str, code: int = 0) -> Ran:
    assert ran.code == code, ran.stderr
    assert_only_text(ran)
    assert_fits(ran, mode, ran.env)
    return ran


# --- conversations -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_conversations_show_every_id_whole(hostile: dict[str, str], mode: str) -> None:
    ran = check(run(mode, hostile, "conversations", "--tenant", "acme"), mode)
    lines = ran.text.splitlines()
    for _, conversation_id, customer, user in CONVERSATIONS:
        assert any(shown(conversation_id) in line for line in lines)
        assert any(shown(customer) in line for line in lines)
        if user:
            assert any(shown(user) in line for line in lines)
    assert "evil.example" in ran.text  # as text...
    assert "\x1b]8" not in ran.stdout  # ...never as a link


def test_conversations_piped_are_a_table_at_natural_width(hostile: dict[str, str]) -> None:
    ran = check(piped(hostile, "conversations", "--customer", "cust-2"), "piped")
    key = shown(ESCAPE_ID)
    assert ran.text.splitlines() == [
        "conversation".ljust(len(key)) + "  tenant  customer  user  messages  started"
        + " " * 13 + "  ended",
        f"{key}  acme    cust-2          {'120':>8}  2026-11-01T10:00:00Z  2026-11-01T10:01:59Z",
    ]  # fmt: skip


def test_conversations_at_80_columns_leave_out_started_then_become_records(
    hostile: dict[str, str],
) -> None:
    ran = check(on_terminal(hostile, 80, "conversations", "--customer", "cust-2"), "80")
    key = shown(ESCAPE_ID)
    assert ran.text.splitlines() == [
        "conversation".ljust(len(key)) + "  tenant  customer  user  messages  ended",
        f"{key}  acme    cust-2          {'120':>8}  2026-11-01T10:01:59Z",
    ]
    assert ran.stderr == (
        "not shown at this width: started (a wider terminal or --json shows them)\n"
    )
    long = check(on_terminal(hostile, 80, "conversations", "--customer", "cust-long"), "80")
    assert long.text.splitlines() == [
        f"conversation  {LONG_ID}", "tenant        acme", "customer      cust-long",
        f"user          {shown(CONVERSATIONS[2][3] or '')}", "messages      2",
        "started       2026-11-01T10:00:00Z", "ended         2026-11-01T10:00:01Z",
    ]  # fmt: skip


def test_conversations_at_200_columns_are_a_table(hostile: dict[str, str]) -> None:
    ran = check(on_terminal(hostile, 200, "conversations", "--customer", "cust-2"), "200")
    assert ran.text == piped(hostile, "conversations", "--customer", "cust-2").text


@pytest.mark.parametrize("mode", MODES)
def test_the_cursor_is_one_whole_line_that_continues_the_list(
    hostile: dict[str, str], mode: str
) -> None:
    first = check(run(mode, hostile, "conversations", "--limit", "1"), mode)
    (more,) = [line for line in first.text.splitlines() if line.startswith("more: --after ")]
    cursor = more.removeprefix("more: --after ")
    seen = set()
    while cursor:
        page = orjson.loads(
            piped(hostile, "conversations", "--limit", "1", "--after", cursor, "--json").stdout
        )
        seen |= {c["conversation_id"] for c in page["items"]}
        cursor = page["next"]
    assert len(seen) == 2  # the two after the first page's one


def test_conversations_json_is_the_stored_text_exactly(hostile: dict[str, str]) -> None:
    ran = check(on_terminal(hostile, 80, "conversations", "--json"), "80")
    page = orjson.loads(ran.stdout)
    assert set(page) == {"items", "next"}
    assert page["next"] is None
    assert {
        (c["tenant_id"], c["conversation_id"], c["customer_id"], c["user_id"])
        for c in page["items"]
    } == set(CONVERSATIONS)
    assert set(page["items"][0]) == docs.json_fields("`conversations` items")
    assert page["items"][0]["started_at"].endswith("Z")


@pytest.mark.parametrize(
    "since", ["2026-11-01T10:01:00Z", "2026-11-01T11:01:00+01:00", "2026-11-01 10:01"]
)
def test_since_takes_what_the_tool_prints_in_any_offset(
    hostile: dict[str, str], since: str
) -> None:
    found = orjson.loads(piped(hostile, "conversations", "--since", since, "--json").stdout)[
        "items"
    ]
    assert [c["conversation_id"] for c in found] == [ESCAPE_ID]  # the only one ending after 10:01


def test_zone_less_times_are_utc_unless_tz_says_otherwise(hostile: dict[str, str]) -> None:
    at = ["conversations", "--since", "2026-11-01 11:01", "--json"]
    assert orjson.loads(piped(hostile, *at).stdout)["items"] == []
    in_paris = orjson.loads(piped(hostile, *at, "--tz", "Europe/Paris").stdout)["items"]
    assert [c["conversation_id"] for c in in_paris] == [ESCAPE_ID]


def test_durations_ago_are_accepted(hostile: dict[str, str]) -> None:
    ran = piped(hostile, "conversations", "--since", "3650d", "--until", "1h", "--json")
    assert ran.code == 0, ran.stderr
    assert len(orjson.loads(ran.stdout)["items"]) == 3


# --- history -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_history_shows_every_message_as_written(hostile: dict[str, str], mode: str) -> None:
    ran = check(run(mode, hostile, "history", MARKUP_ID), mode)
    flat = ran.text.replace("\n", " ")
    squeezed = re.sub(r"\s+", " ", flat)
    for _, content in MARKUP_MESSAGES:
        for part in terminal.visible(content, prose=True).plain.split():
            assert part in squeezed
    assert SUMMARY in ran.text
    assert "(summary)" in ran.text
    assert ran.text.count("2026-11-01T10:00:0") == len(MARKUP_MESSAGES) + 1
    assert shown(CONVERSATIONS[0][2]) in ran.text  # the customer in the context line


def test_history_piped_keeps_lines_and_indents_content(hostile: dict[str, str]) -> None:
    lines = check(piped(hostile, "history", MARKUP_ID), "piped").text.splitlines()
    assert lines[:7] == [
        f"conversation  {shown(MARKUP_ID)}",
        "tenant        acme",
        f"customer      {shown(CONVERSATIONS[0][2])}",
        f"user          {shown(CONVERSATIONS[0][3] or '')}",
        "",
        "2026-11-01T10:00:00Z  user",
        "    [/]",
    ]
    tool = lines.index("2026-11-01T10:00:04Z  tool")
    assert lines[tool + 1 : tool + 4] == [
        "    ctl \\x01\\x08\\x7f\\x9b31m \\u202eevil\\u202c    tab",  # tab expanded
        "    second line\\r",
        "    third",
    ]
    assert lines[-2:] == ["2026-11-01T10:00:06Z  system  (summary)", f"    {SUMMARY}"]


def test_history_with_a_10000_character_id(hostile: dict[str, str]) -> None:
    for mode in MODES:
        ran = check(run(mode, hostile, "history", LONG_ID), mode)
        assert sum(LONG_ID in line for line in ran.text.splitlines()) == 1


@pytest.mark.parametrize("mode", ["80", "piped"])
def test_history_pages_with_a_whole_cursor(hostile: dict[str, str], mode: str) -> None:
    first = check(run(mode, hostile, "history", ESCAPE_ID), mode)
    assert first.text.count("    message ") == 100
    more = first.text.splitlines()[-1]
    assert more.startswith("more: --after ")
    rest = check(
        run(mode, hostile, "history", ESCAPE_ID, "--after", more.removeprefix("more: --after ")),
        mode,
    )
    assert rest.text.count("    message ") == 20
    assert "more:" not in rest.text
    assert "message 119" in rest.text


def test_history_json_is_the_stored_text_exactly(hostile: dict[str, str]) -> None:
    ran = check(on_terminal(hostile, 80, "history", MARKUP_ID, "--json", "--limit", "3"), "80")
    page = orjson.loads(ran.stdout)
    assert [m["message_content"] for m in page["items"]] == [c for _, c in MARKUP_MESSAGES[:3]]
    rest = orjson.loads(
        piped(hostile, "history", MARKUP_ID, "--json", "--after", page["next"]).stdout
    )
    contents = [m["message_content"] for m in page["items"] + rest["items"]]
    assert contents == [c for _, c in MARKUP_MESSAGES] + [SUMMARY]
    assert rest["next"] is None
    assert set(page["items"][0]) == docs.json_fields("`history` items")


@pytest.mark.parametrize("mode", MODES)
def test_an_unknown_conversation_is_one_line_and_exit_1(hostile: dict[str, str], mode: str) -> None:
    for extra in ([], ["--json"]):
        ran = check(run(mode, hostile, "history", "nobody\x1b[2J", *extra), mode, code=1)
        assert ran.stdout == ""
        assert ran.stderr == (
            "archiver history: no archived messages for conversation 'nobody\\x1b[2J': find its id"
            " with `archiver conversations --customer ID` (or --user, --tenant)\n"
        )


def test_a_bad_time_names_the_flag_and_the_forms(hostile: dict[str, str]) -> None:
    ran = check(piped(hostile, "history", MARKUP_ID, "--since", "yesterday"), "piped", code=2)
    assert ran.stderr.startswith(
        "archiver history: Invalid value for '--since': not a time: 'yesterday'"
    )
    assert "1h" in ran.stderr
    assert "--help" in ran.stderr


def test_a_cursor_of_another_command_is_refused(hostile: dict[str, str]) -> None:
    page = orjson.loads(piped(hostile, "conversations", "--limit", "1", "--json").stdout)
    ran = check(piped(hostile, "history", MARKUP_ID, "--after", page["next"]), "piped", code=2)
    assert "not a cursor of `archiver history`" in ran.stderr


# --- dead letters --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_dead_letters_show_keys_whole_and_errors_as_text(
    hostile: dict[str, str], mode: str
) -> None:
    ran = check(run(mode, hostile, "dead-letters"), mode)
    for key in DEAD_KEYS:
        assert any(shown(key) in line for line in ran.text.splitlines())
    assert "bad [bold]json\\x1b]0;x\\x07 at line 1" in ran.text


def test_dead_letters_json_envelope(hostile: dict[str, str]) -> None:
    page = orjson.loads(
        check(on_terminal(hostile, 80, "dead-letters", "--json", "--limit", "1"), "80").stdout
    )
    assert [d["source_key"] for d in page["items"]] == DEAD_KEYS[:1]
    assert set(page["items"][0]) == docs.json_fields("`dead-letters` items")
    rest = orjson.loads(piped(hostile, "dead-letters", "--json", "--after", page["next"]).stdout)
    assert [d["source_key"] for d in rest["items"]] == DEAD_KEYS[1:]


@pytest.mark.parametrize("order", ["before", "after"])
def test_replay_options_go_before_or_after_it_and_unknown_ids_fail(
    hostile: dict[str, str], order: str
) -> None:
    args = (
        ["dead-letters", "--json", "replay", "999"]
        if order == "before"
        else ["dead-letters", "replay", "999", "--json"]
    )
    ran = check(on_terminal(hostile, 80, *args), "80", code=1)
    assert orjson.loads(ran.stdout) == {
        "archived": 0,
        "messages": 0,
        "still_failing": 0,
        "not_found": [999],
    }
    assert set(orjson.loads(ran.stdout)) == docs.json_fields("`dead-letters replay`")


def test_replay_still_failing_exits_1(hostile: dict[str, str]) -> None:
    ran = check(piped(hostile, "dead-letters", "replay"), "piped", code=1)
    assert ran.text == "replayed: 0 archived (0 messages), 2 still failing\n"


# --- status, check, health, migrate, sweep -------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_status_shows_every_part_as_text(hostile: dict[str, str], mode: str) -> None:
    ran = check(run(mode, hostile, "status"), mode)
    assert "check        FAIL: no health file" in ran.text
    assert shown(HEARTBEAT_MEMBER) in ran.text
    assert shown("[red]x\x1b[2J") in ran.text
    assert shown("host-[/]\x1b[2J") in ran.text
    assert re.search(r"^schema\s+current$", ran.text, re.MULTILINE)
    assert re.search(r"^open dead letters\s+2$", ran.text, re.MULTILINE)


def test_status_json(hostile: dict[str, str]) -> None:
    report = orjson.loads(check(on_terminal(hostile, 80, "status", "--json"), "80").stdout)
    assert set(report) == docs.json_fields("`status`")
    assert set(report["health_file"]) == docs.json_fields("`check`")
    assert set(report["consumers"]) == {"ok", "error", "items"}
    assert set(report["database"]) == {"url", "ok", "error", "applied_migrations",
                                       "pending_migrations", "open_dead_letters", "runs"}  # fmt: skip
    assert set(report["consumers"]["items"][0]) <= docs.json_fields(
        "a consumer (`status`, `health`)"
    )
    assert report["health_file"]["check"] == {"ok": False, "reason": "no health file"}
    assert [c["consumer"] for c in report["consumers"]["items"]] == [HEARTBEAT_MEMBER]
    assert report["database"]["open_dead_letters"] == 2
    assert report["database"]["runs"][0]["host"] == "host-[/]\x1b[2J"


@pytest.mark.parametrize("mode", MODES)
def test_health_passes_with_a_live_consumer(hostile: dict[str, str], mode: str) -> None:
    ran = check(run(mode, hostile, "health"), mode)
    results = re.findall(r"^(ok|FAIL)\s+(\w+)", ran.text, re.MULTILINE)
    assert results == [("ok", "postgresql"), ("ok", "redis"), ("ok", "consumers")]
    assert shown(HEARTBEAT_MEMBER) in ran.text.replace("\n", "").replace(" ", "")
    failing = check(run(mode, hostile, "health", "--min-consumers", "2"), mode, code=1)
    assert re.search(r"^FAIL\s+consumers", failing.text, re.MULTILINE)


@pytest.mark.parametrize("mode", MODES)
def test_check_without_health_file(hostile: dict[str, str], mode: str) -> None:
    assert check(run(mode, hostile, "check"), mode, code=1).text == "no health file\n"


def test_check_and_health_json(hostile: dict[str, str]) -> None:
    checked = piped(hostile, "check", "--json")
    assert checked.code == 1
    assert set(orjson.loads(checked.stdout)) == docs.json_fields("`check`")
    result = orjson.loads(check(piped(hostile, "health", "--json"), "piped").stdout)
    assert set(result) == docs.json_fields("`health`")
    assert [(c["name"], c["ok"]) for c in result["checks"]] == [
        ("postgresql", True), ("redis", True), ("consumers", True),
    ]  # fmt: skip
    assert [c["consumer"] for c in result["consumers"]] == [HEARTBEAT_MEMBER]


@pytest.mark.parametrize("mode", MODES)
def test_migrate_and_sweep_summaries(
    hostile: dict[str, str], admin_database_url: str, mode: str
) -> None:
    owner = hostile | {"ARCHIVER_DATABASE_URL": admin_database_url}  # migrate runs as the owner
    assert check(run(mode, owner, "migrate"), mode).text == "schema is up to date\n"
    refused = check(run(mode, hostile, "migrate"), mode, code=2)
    assert "archiver_writer" in refused.stderr
    migrated = orjson.loads(run(mode, owner, "migrate", "--json").stdout)
    assert migrated == {"applied": []}
    assert set(migrated) == docs.json_fields("`migrate`")
    swept = check(run(mode, hostile, "sweep"), mode)
    assert swept.text.startswith("found 0, archived 0 (0 messages), dead-lettered 0, errors 0")
    report = orjson.loads(run(mode, hostile, "sweep", "--json").stdout)
    assert set(report) == docs.json_fields("`sweep`")


# --- colour, servers down, configuration ---------------------------------------------------------


def test_no_color_means_no_colour_codes(hostile: dict[str, str]) -> None:
    coloured = on_terminal(hostile, 200, "history", MARKUP_ID)
    assert COLOUR.search(coloured.stdout)
    plain = check(on_terminal(hostile | {"NO_COLOR": "1"}, 200, "history", MARKUP_ID), "200")
    assert not COLOUR.search(plain.stdout)
    assert plain.text == coloured.text


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["history", "x"],
        ["conversations"],
        ["dead-letters"],
        ["health"],
        ["sweep"],
        ["migrate"],
    ],
)
def test_servers_down_exit_3_with_one_line_naming_the_url(
    env: dict[str, str], args: list[str]
) -> None:
    down = env | {"ARCHIVER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x",
                  "ARCHIVER_REDIS_URL": "redis://127.0.0.1:1/0"}  # fmt: skip
    ran = piped(down, *args)
    assert ran.code == 3, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    assert "127.0.0.1:1" in ran.stdout + ran.stderr
    errors = [line for line in ran.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) <= 1


def test_a_missing_database_is_exit_3_not_0(env: dict[str, str], database_url: str) -> None:
    missing = database_url.rsplit("/", 1)[0] + "/no_such_database"
    ran = piped(env | {"ARCHIVER_DATABASE_URL": missing}, "status")
    assert ran.code == 3
    assert "no_such_database" in ran.stdout


def test_a_bad_integer_names_the_flag(env: dict[str, str]) -> None:
    for args, extra in (
        (["sweep", "--workers", "abc"], {}),
        (["sweep"], {"ARCHIVER_WORKERS": "abc"}),
    ):
        ran = piped(env | extra, *args)
        assert ran.code == 2
        assert ran.stderr.startswith(
            "archiver sweep: Invalid value for '--workers' (env var: 'ARCHIVER_WORKERS')"
        )
        assert len(ran.stderr.splitlines()) == 1


def test_a_misspelt_variable_is_warned_about(hostile: dict[str, str]) -> None:
    ran = piped(hostile | {"ARCHIVER_SWEEP_INTERVL": "5h", "ARCHIVER_TEST_ANYTHING": "1"}, "check")
    assert ran.stderr.splitlines()[0] == (
        "archiver: warning: ARCHIVER_SWEEP_INTERVL is not a setting and is ignored"
        " (did you mean ARCHIVER_SWEEP_INTERVAL?)"
    )
    assert "ARCHIVER_TEST_ANYTHING" not in ran.stderr


def test_debug_shows_the_traceback(env: dict[str, str]) -> None:
    down = env | {"ARCHIVER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}
    assert "Traceback" not in piped(down, "conversations").stderr
    assert "Traceback" in piped(down, "--debug", "conversations").stderr
    assert "Traceback" in piped(down, "conversations", "--debug").stderr


def test_a_reader_that_goes_away_is_not_an_error(hostile: dict[str, str]) -> None:
    """`archiver ... | head -1`: the rest of the output has nowhere to go; that is fine."""
    for args in (["history", ESCAPE_ID], ["history", ESCAPE_ID, "--json"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", *args, "--limit", "1000"],
            env=hostile, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # as `head -1` does
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.wait(timeout=60) in (0, 1)
        assert "Traceback" not in stderr
        assert "could not be reached" not in stderr
