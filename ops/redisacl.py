"""The archiver's least-privilege Redis user exactly as ops/redis-acl.conf documents it: the
test suite and the fault harness run the archiver as this user, so a missing grant fails them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import quote

ACL_FILE = Path(__file__).with_name("redis-acl.conf")
PLACEHOLDER = "#REPLACE_WITH_SHA256_OF_THE_PASSWORD"
USER = "archiver"
LANGGRAPH_USER = "archiver-langgraph"  # ARCHIVER_SOURCE=langgraph-redis
LANGGRAPH_DELETE_USER = "archiver-langgraph-delete"  # ... with ARCHIVER_DELETE_ARCHIVED=1
ERASURE_LANGGRAPH_USER = "archiver-erasure-langgraph"  # its erasure (ARCHIVER_ERASURE_REDIS_URL)


def user_line(password: str, user: str = USER) -> str:
    """The file's `user archiver ...` line (or another user's) with the password's SHA-256 in
    place of the placeholder: a redis.conf line for a private server."""
    lines = [ln for ln in ACL_FILE.read_text().splitlines() if ln.startswith(f"user {user} ")]
    if len(lines) != 1 or PLACEHOLDER not in lines[0]:
        raise ValueError(f"{ACL_FILE} must hold one `user {user}` line with {PLACEHOLDER}")
    digest = hashlib.sha256(password.encode()).hexdigest()
    return lines[0].replace(PLACEHOLDER, f"#{digest}")


def url(port: int, password: str, db: int = 0, host: str = "127.0.0.1", user: str = USER) -> str:
    """A redis:// URL that logs in as the archiver user (or another)."""
    return f"redis://{user}:{quote(password, safe='')}@{host}:{port}/{db}"
