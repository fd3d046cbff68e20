"""Read py-spy's collapsed stacks (`--format raw`): where the samples went, by function."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")
_TOP = 30


def _function(frame: str) -> str:
    """`name (path/to/file.py:12)` -> `name (file.py)`: one entry per function."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    name, path = match.groups()
    parts = path.split("/")
    tail = "/".join(parts[-2:]) if "site-packages" in path or "consumer" in parts else parts[-1]
    return f"{name} ({tail})"


def tally(raw: Path) -> tuple[Counter[str], Counter[str], int]:
    """Self and inclusive samples per function, and the total."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        stack, count = match.group(1), int(match.group(2))
        frames = [_function(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return own, inclusive, total


def summarize(raw: Path) -> Path:
    """Write `<raw>.top.txt` with the top functions by self and by inclusive samples."""
    own, inclusive, total = tally(raw)
    lines = [f"{total} samples (py-spy, active threads only)", "", "self %   function"]
    lines += [f"{100 * n / total:6.1f}   {name}" for name, n in own.most_common(_TOP)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * n / total:6.1f}   {name}" for name, n in inclusive.most_common(_TOP)]
    out = raw.with_suffix(".top.txt")
    out.write_text("\n".join(lines) + "\n")
    return out
