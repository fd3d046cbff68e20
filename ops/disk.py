"""A real full disk for PostgreSQL: a tablespace on a small tmpfs that can be filled and freed.

Used by the disk-full test and the `pg_disk_full` fault scenario. Mounting a tmpfs needs
root (CAP_SYS_ADMIN); without it `mount` fails and so does the caller, loudly: a disk-full
check that silently does nothing would prove nothing. PostgreSQL then reports what a full
volume makes it report: `could not extend file ...: No space left on device` (SQLSTATE 53100).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from consumer.demo import embedded

CHUNK = 64 * 1024


class TmpfsTablespace:
    """A tmpfs of `size_bytes` mounted in the server's own directory, with a directory owned
    by the server's user for `CREATE TABLESPACE ... LOCATION` (see `location`)."""

    def __init__(self, server: embedded.PostgresServer, name: str, size_bytes: int) -> None:
        self.name = name
        self.size_bytes = size_bytes
        self.mount_point = server.base_dir / f"tmpfs-{name}"
        self.owner = (server.base_dir.stat().st_uid, server.base_dir.stat().st_gid)
        self.filler = self.mount_point / "filler"
        self.mounted = False

    @property
    def location(self) -> Path:
        return self.mount_point / "tablespace"

    def mount(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError(
                "a disk-full check mounts a small tmpfs for a tablespace: run it as root"
            )
        self.mount_point.mkdir(mode=0o700, exist_ok=True)
        options = f"size={self.size_bytes},mode=0700"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.mount_point)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        self.mounted = True
        for path in (self.mount_point, self.location):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, *self.owner)

    def fill(self) -> int:
        """Take every free byte (as root: tmpfs keeps nothing back); returns the bytes taken."""
        taken = 0
        block = b"\0" * CHUNK
        with self.filler.open("ab", buffering=0) as out:
            while True:
                try:
                    taken += out.write(block) or 0
                except OSError:  # ENOSPC: full
                    return taken

    def free(self) -> None:
        """What an operator does about a full disk: make room."""
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(
                ["umount", "--lazy", str(self.mount_point)],
                check=False, capture_output=True, timeout=30,
            )  # fmt: skip
            self.mounted = False
        with contextlib.suppress(OSError):
            self.mount_point.rmdir()

    def __enter__(self) -> Self:
        self.mount()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unmount()
