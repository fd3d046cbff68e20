"""Rendering: stored strings only ever as text, lists that keep ids whole, JSON that is safe."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from rich.console import Console
from rich.text import Text

from consumer import terminal

HOSTILE = [
    "[/]",
    "[/bold]",
    "[red]red[/red]",
    "[link=https://evil.example/login]click[/link]",
    ":warning: :smile:",
    "\x1b[2J\x1b[H",
    "\x1b]0;owned\x07",
    "\x1b]8;;https://evil.example\x1b\\x\x1b]8;;\x1b\\",
    "\x9b31m",
    "a\rb\x08c\x00d\x7f",
    "\u202eevil\u202c",
    "zero\u200bwidth",
    "bad\udcffbyte",
]
SGR = re.compile(r"\x1b\[[0-9;]*m")


def render(draw: object, width: int = 80, terminal_: bool = True, color: bool = True) -> str:
    out = io.StringIO()
    console = Console(
        file=out, width=width, force_terminal=terminal_, no_color=not color,
        markup=False, emoji=False, highlight=False,
        color_system="standard" if terminal_ else "auto",
    )  # fmt: skip
    draw(console)  # type: ignore[operator]
    return out.getvalue()


def only_styles(text: str) -> str:
    """The output with its SGR style codes removed: must leave no ESC at all."""
    return SGR.sub("", text)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_are_printed_as_visible_text(value: str) -> None:
    shown = render(lambda c: terminal.print_line(c, terminal.visible(value)))
    plain = only_styles(shown)
    assert "\x1b" not in plain
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\ud800-\udfff]", plain)
    assert "\x1b]8" not in shown  # no hyperlink
    assert plain.rstrip("\n") == terminal.plain(value)


def test_markup_and_emoji_codes_stay_literal() -> None:
    for value in ("[/]", "[link=https://evil.example/login]x[/link]", ":smile:"):
        assert (
            only_styles(render(lambda c, v=value: terminal.print_line(c, terminal.visible(v))))
            == value + "\n"
        )


@pytest.mark.parametrize(
    ("value", "shown"),
    [("a\x1b[2Jb", "a\\x1b[2Jb"), ("\x9b", "\\x9b"), ("x\u202ey", "x\\u202ey"), ("t\tn\nr\r", "t\\tn\\nr\\r"),
     ("bad\udcffbyte", "bad\\xffbyte"), ("ok ñandú 界 👨‍👩‍👧", "ok ñandú 界 👨\\u200d👩\\u200d👧")],
)  # fmt: skip
def test_escapes_name_the_character(value: str, shown: str) -> None:
    assert terminal.plain(value) == shown


def test_prose_keeps_lines_tabs_and_joiners_but_not_controls() -> None:
    text = terminal.visible("line one\n\tline two 👨‍👩‍👧\x1b[31m", prose=True)
    assert text.plain == "line one\n\tline two 👨‍👩‍👧\\x1b[31m"


def test_escapes_are_styled_on_a_terminal_and_plain_when_piped() -> None:
    styled = render(lambda c: terminal.print_line(c, terminal.visible("a\x1bb")))
    assert "\x1b[7m\\x1b" in styled
    piped = render(lambda c: terminal.print_line(c, terminal.visible("a\x1bb")), terminal_=False)
    assert piped == "a\\x1bb\n"


ROWS: list[dict[str, Any]] = [
    {"id": "c-" + "x" * 150, "n": 12, "error": "first error"},
    {"id": "short", "n": 1, "error": "e" * 100},
]
COLUMNS = [
    terminal.column("conversation", "id", "id"),
    terminal.column("n", "n", "number"),
    terminal.column("error", "error", "prose"),
]


def test_piped_lists_are_tables_at_their_natural_width() -> None:
    shown = render(lambda c: terminal.listing(c, COLUMNS, ROWS), terminal_=False).splitlines()
    assert shown[0] == "conversation" + " " * 143 + "n  error"
    assert shown[1] == ROWS[0]["id"] + "  12  first error"
    assert shown[2] == "short" + " " * 150 + "1  " + "e" * 100


def test_a_list_too_wide_for_the_terminal_becomes_records_ids_whole_prose_folded() -> None:
    shown = only_styles(render(lambda c: terminal.listing(c, COLUMNS, ROWS), width=80))
    assert shown.splitlines() == [
        "conversation  " + ROWS[0]["id"], "n             12", "error         first error", "",
        "conversation  short", "n             1", "error         " + "e" * 66, " " * 14 + "e" * 34,
    ]  # fmt: skip


def test_a_table_that_fits_folds_only_its_prose_column() -> None:
    rows = [{"id": "c-1", "n": 3, "error": "e" * 100}]
    lines = only_styles(render(lambda c: terminal.listing(c, COLUMNS, rows), width=60)).splitlines()
    assert lines[0] == "conversation  n  error"
    assert lines[1] == "c-1           3  " + "e" * 43
    assert lines[2] == " " * 17 + "e" * 43
    assert lines[3] == " " * 17 + "e" * 14
    assert all(len(line) <= 60 for line in lines)


def test_wide_characters_count_twice_when_folding() -> None:
    rows = [{"id": "c", "n": 1, "error": "界" * 40}]
    lines = only_styles(render(lambda c: terminal.listing(c, COLUMNS, rows), width=40)).splitlines()
    assert all(Text(line).cell_len <= 40 for line in lines)
    assert "".join(line.strip() for line in lines[1:]).endswith("界" * 10)


def test_cells_show_times_in_utc_and_nothing_for_none() -> None:
    assert (
        terminal.cell(datetime(2026, 12, 7, 17, 42, 20, 5, tzinfo=UTC)).plain
        == "2026-12-07T17:42:20Z"
    )
    assert terminal.cell(None).plain == ""
    assert terminal.cell(True).plain == "yes"


def test_json_escapes_what_a_terminal_could_act_on() -> None:
    value = {"text": "".join(HOSTILE[5:-1]) + "\u2028", "at": datetime(2026, 1, 1, tzinfo=UTC)}
    dumped = terminal.dumps(value)
    assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2028]", dumped.replace("\n", ""))
    parsed = orjson.loads(dumped)
    assert parsed["at"] == "2026-01-01T00:00:00Z"
    assert parsed["text"].startswith("\x1b[2J")  # the value itself is unchanged


def test_output_lists_share_one_json_envelope(capsys: pytest.CaptureFixture[str]) -> None:
    terminal.Output(json=True).items([{"a": 1}], COLUMNS, "CURSOR")
    assert orjson.loads(capsys.readouterr().out) == {"items": [{"a": 1}], "next": "CURSOR"}
    terminal.Output(json=True).items([], COLUMNS, None)
    assert orjson.loads(capsys.readouterr().out) == {"items": [], "next": None}


def test_text_lists_end_with_the_whole_cursor(capsys: pytest.CaptureFixture[str]) -> None:
    cursor = "A" * 300
    terminal.Output().items([{"id": "c", "n": 1, "error": ""}], COLUMNS, cursor)
    assert capsys.readouterr().out.splitlines()[-1] == "more: --after " + cursor


def test_an_empty_text_list_says_so_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    terminal.Output().items([], COLUMNS, None, "no conversations match")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "no conversations match\n"


def test_json_of_a_lone_surrogate_is_escaped_not_refused() -> None:
    assert orjson.loads(terminal.dumps({"key": "bad\udcffbyte"}).replace("\\udcff", "?")) == {
        "key": "bad?byte"
    }
