"""A private S3 API server for the cold tier's tests: moto in server mode (the dev extra's
`moto_server`), on a free loopback port, a child of the test process like the other servers
(consumer/demo/embedded.py): stop, kill, pause (SIGSTOP) and resume work the same way. A
missing binary raises ServerBinaryNotFoundError: the suite fails, it never skips."""

from __future__ import annotations

import shutil
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

from consumer.demo import embedded

ACCESS_KEY = "archiver-test-key"
SECRET_KEY = "archiver-test-secret"  # moto accepts any; the client still signs every request
REGION = "us-east-1"


def _binary() -> Path:
    beside = Path(sys.executable).parent / "moto_server"
    found = beside if beside.is_file() else shutil.which("moto_server")
    if found is None:
        raise embedded.ServerBinaryNotFoundError(
            "moto_server not found: `make install` installs the dev extra (moto[server])"
        )
    return Path(found)


class MotoServer(embedded._ManagedServer):
    """`moto_server -H 127.0.0.1 -p PORT`; `endpoint` is its URL."""

    name = "moto_server"
    stop_signal = signal.SIGTERM
    start_timeout = 30.0

    def __init__(self, workdir: Path) -> None:
        self.binary = _binary()
        super().__init__(workdir, None, "moto.log")

    @property
    def endpoint(self) -> str:
        return f"http://{embedded.HOST}:{self.port}"

    def _argv(self) -> list[str]:
        return [str(self.binary), "-H", embedded.HOST, "-p", str(self.port)]

    def _probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=0.5) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False
