"""What the commands print: stored strings as text only, lists that keep ids whole, and JSON.

* A stored string (message content, ids, keys, errors) reaches the terminal only through
  `visible()`: never as rich markup, and with control characters, escape sequences, bidi
  overrides and invisible characters shown as escapes (`\\x1b`, `\\u202e`), styled on a
  terminal so that they stand out from the text around them.
* Colour and styles only on a terminal, and none with NO_COLOR; piped output is plain.
* A list is a table at its natural width when that fits the terminal (piped: always), else
  one block of `label  value` lines per row. Neither cuts nor wraps an id or a cursor: a
  value longer than the terminal is one line that the terminal itself folds. Only a column
  marked `prose` (an error, a message) is folded, inside its own column.
* JSON: one document on stdout; a list is `{"items": [...], "next": cursor-or-null}`; times
  as `times.iso`; characters a terminal could act on are written as JSON `\\u` escapes
  (`\\u001b` for ESC).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from rich.console import Console
from rich.text import Text

from consumer import times

# Single-line values (ids, keys, errors): every control and invisible character.
_UNSAFE_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)
# Prose (message content): line breaks and tabs stay, and so do the joiners and marks that
# scripts and emoji need; what can move the cursor, recolour or reorder the screen does not.
_UNSAFE_PROSE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
ESCAPE_STYLE = "reverse"
GAP = 2
PROSE_MIN = 20

Kind = Literal["id", "text", "number", "time", "prose"]


# --- text ----------------------------------------------------------------------------------------


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: str, *, prose: bool = False) -> Text:
    """A stored string as rich Text: never markup, unsafe characters shown as escapes."""
    pattern = _UNSAFE_PROSE if prose else _UNSAFE_LINE
    text = Text(no_wrap=False)
    start = 0
    for match in pattern.finditer(value):
        text.append(value[start : match.start()])
        text.append(_escape(match.group()), style=ESCAPE_STYLE)
        start = match.end()
    text.append(value[start:])
    return text


def plain(value: str) -> str:
    """`visible` without styles: for one-line messages such as errors."""
    return visible(value).plain


def cell(value: Any, kind: Kind = "text") -> Text:
    """One value as a single line of a table or record."""
    if value is None:
        return Text("")
    if isinstance(value, datetime):
        return Text(times.text(value))
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    return visible(str(value))


def console() -> Console:
    """stdout, with markup, emoji codes and highlighting off; rich honours NO_COLOR."""
    return Console(markup=False, emoji=False, highlight=False)


def errors() -> Console:
    return Console(stderr=True, markup=False, emoji=False, highlight=False)


def width_of(out: Console) -> int | None:
    """The terminal's width; None (unlimited) when the output is not a terminal."""
    return out.width if out.is_terminal else None


def print_line(out: Console, text: Text | str) -> None:
    """One logical line, never wrapped by us (the terminal folds it if it must)."""
    out.print(text if isinstance(text, Text) else Text(text), soft_wrap=True)


# --- lists ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a list: its title, how to get its value from a row, and its kind. A table
    too wide for the terminal leaves out columns with a `drop` rank (highest first) before it
    falls back to records; 0 means always shown."""

    title: str
    get: Callable[[Mapping[str, Any]], Any]
    kind: Kind = "text"
    drop: int = 0


def column(title: str, key: str, kind: Kind = "text", drop: int = 0) -> Column:
    return Column(title, lambda row: row.get(key), kind, drop)


def listing(out: Console, columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as a table if it fits (leaving out droppable columns if it must), else as records
    with every column (see the module docstring)."""
    cells = [[cell(c.get(row), c.kind) for c in columns] for row in rows]
    widths = _natural_widths(columns, cells)
    keep = _columns_that_fit(columns, widths, width_of(out))
    if keep is None:
        prose = {c.title for c in columns if c.kind == "prose"}
        blocks = [[(c.title, v) for c, v in zip(columns, line, strict=True)] for line in cells]
        records(out, blocks, prose)
        return
    if len(keep) < len(columns):
        hidden = ", ".join(c.title for i, c in enumerate(columns) if i not in keep)
        note(f"not shown at this width: {hidden} (a wider terminal or --json shows them)")
    _table(out, [columns[i] for i in keep], [[line[i] for i in keep] for line in cells],
           [widths[i] for i in keep])  # fmt: skip


def _columns_that_fit(
    columns: Sequence[Column], widths: list[int], limit: int | None
) -> list[int] | None:
    """The columns a table can show within `limit`, or None if even the essential ones do not."""
    keep = list(range(len(columns)))
    droppable = sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop)
    while not _fits([columns[i] for i in keep], [widths[i] for i in keep], limit):
        if not droppable:
            return None
        keep.remove(droppable.pop(0))
    return keep


def _natural_widths(columns: Sequence[Column], cells: list[list[Text]]) -> list[int]:
    return [
        max([len(c.title), *(line[i].cell_len for line in cells)]) for i, c in enumerate(columns)
    ]


def _fits(columns: Sequence[Column], widths: list[int], limit: int | None) -> bool:
    if limit is None:
        return True
    fixed = [w for c, w in zip(columns, widths, strict=True) if c.kind != "prose"]
    prose = [min(w, PROSE_MIN) for c, w in zip(columns, widths, strict=True) if c.kind == "prose"]
    return sum(fixed) + sum(prose) + GAP * (len(widths) - 1) <= limit


def _table(
    out: Console, columns: Sequence[Column], cells: list[list[Text]], widths: list[int]
) -> None:
    header = [Text(c.title, style="bold") for c in columns]
    for line in [header, *cells]:
        for text in _row_lines(out, columns, line, widths):
            print_line(out, text)


def _row_lines(
    out: Console, columns: Sequence[Column], line: list[Text], widths: list[int]
) -> list[Text]:
    """One row, padded; a last prose column too wide for the terminal folds in its column."""
    head = Text()
    for i, (c, value) in enumerate(zip(columns, line, strict=True)):
        pad = Text(" " * (widths[i] - value.cell_len))
        if i == len(columns) - 1:
            if c.kind == "prose":
                return _hanging(out, head, value)
            return [_joined(head, pad + value if c.kind == "number" else value)]
        head.append_text(pad + value if c.kind == "number" else value + pad)
        head.append(" " * GAP)
    return [head]


def _hanging(out: Console, head: Text, value: Text) -> list[Text]:
    """`head` then `value`, the value wrapped between words (folding a word too long) within
    the room the terminal leaves, later lines indented under its start."""
    limit = width_of(out)
    if limit is None or head.cell_len + value.cell_len <= limit:
        return [_joined(head, value)]
    pieces = value.wrap(out, max(1, limit - head.cell_len), overflow="fold")
    for piece in pieces:
        piece.rstrip()  # the space a line was broken at
    indent = Text(" " * head.cell_len)
    return [head + pieces[0], *(indent + piece for piece in pieces[1:])]


def _joined(head: Text, value: Text) -> Text:
    """`head` then `value`, without trailing padding when the value is empty."""
    line = head + value
    if not value.plain:
        line.rstrip()
    return line


def records(
    out: Console, blocks: Sequence[Sequence[tuple[str, Text]]], prose: Container[str] = ()
) -> None:
    """Blocks of `label  value` lines, a blank line between blocks; values are never wrapped
    (the terminal folds a long id), but those whose label is in `prose` are wrapped."""
    for n, block in enumerate(blocks):
        if n:
            print_line(out, "")
        fields(out, block, prose)


def fields(out: Console, pairs: Sequence[tuple[str, Text]], prose: Container[str] = ()) -> None:
    label_width = max((len(label) for label, _ in pairs), default=0)
    for label, value in pairs:
        head = Text.assemble((label.ljust(label_width), "bold"), " " * GAP)
        lines = _hanging(out, head, value) if label in prose else [_joined(head, value)]
        for line in lines:
            print_line(out, line)


# --- JSON ----------------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return times.iso(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    """JSON for people and scripts alike: indented, times in UTC with Z, terminal-safe."""
    options = orjson.OPT_INDENT_2 | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
    try:
        raw = orjson.dumps(value, default=_default, option=options).decode()
    except orjson.JSONEncodeError:  # a lone surrogate (bytes that were not UTF-8): escape all
        return json.dumps(value, default=_default, indent=2, ensure_ascii=True)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", raw)


# --- a command's output --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    """Where a command's result goes: JSON (`--json`) or text for people."""

    json: bool = False

    def items(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[Column],
        next_cursor: str | None = None,
        empty: str = "nothing found",
        draw: Callable[[Console, Sequence[Mapping[str, Any]]], None] | None = None,
    ) -> None:
        """A list: `{"items": [...], "next": ...}`, or for people the rows (a listing of
        `columns`, or `draw`n otherwise) and the flag that shows the next page."""
        if self.json:
            print(dumps({"items": list(rows), "next": next_cursor}))
            return
        out = console()
        if not rows:
            note(empty)
        elif draw is not None:
            draw(out, rows)
        else:
            listing(out, columns, rows)
        if next_cursor:
            print_line(out, Text("more: --after ") + Text(next_cursor))

    def document(self, value: Any, show: Callable[[Console], None]) -> None:
        """One result: the JSON document, or `show` drawing it for people."""
        if self.json:
            print(dumps(value))
        else:
            show(console())

    def summary(self, value: Any, line: str) -> None:
        """A result that is one sentence for people (wrapped between words on a terminal)."""
        self.document(value, lambda out: sentence(out, visible(line)))


def sentence(out: Console, text: Text) -> None:
    """Prose: wrapped between words on a terminal, one line when piped (for grep)."""
    out.print(text, soft_wrap=not out.is_terminal)


def note(message: str) -> None:
    """A remark for the person at the terminal (stderr): not part of the data."""
    sentence(errors(), Text(plain(message), style="dim"))
