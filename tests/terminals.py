"""Running `archiver` as a person does: stdout on a pseudo-terminal of a given width, or piped."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import threading
from dataclasses import dataclass
from pathlib import Path

SGR = re.compile(r"\x1b\[[0-9;]*m")
CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Ran:
    stdout: str
    stderr: str
    code: int
    env: dict[str, str]

    @property
    def text(self) -> str:
        """stdout without its style codes (SGR): what a person reads."""
        return SGR.sub("", self.stdout)


def _drain(fd: int, into: list[bytes]) -> None:
    with contextlib.suppress(OSError):  # EIO once every writer of the terminal has exited
        while chunk := os.read(fd, 65536):
            into.append(chunk)


def on_terminal(
    env: dict[str, str], columns: int, *args: str, cwd: Path | None = None, timeout: float = 60
) -> Ran:
    """The command with stdout on a pseudo-terminal `columns` wide (stderr captured apart)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # no \n -> \r\n translation: read exactly what was written
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    chunks: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(master, chunks))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", *args], stdin=subprocess.DEVNULL, stdout=slave,
            stderr=subprocess.PIPE, env=env, cwd=cwd,
        )  # fmt: skip
        os.close(slave)
        reader.start()
        _, err = proc.communicate(timeout=timeout)
        reader.join(timeout=10)
    finally:
        os.close(master)
    return Ran(b"".join(chunks).decode(), err.decode(), proc.returncode, env)


def piped(env: dict[str, str], *args: str) -> Ran:
    done = subprocess.run(
        [sys.executable, "-m", "consumer", *args], env=env, capture_output=True, timeout=60, check=False
    )  # fmt: skip
    return Ran(done.stdout.decode(), done.stderr.decode(), done.returncode, env)
