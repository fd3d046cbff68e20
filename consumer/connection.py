"""The connections our Redis clients use: redis-py's, with commands packed by hiredis.

redis-py's asyncio connection packs every argument in Python (about 2.8 µs each); the archive
path sends scripts with a thousand keys and more (a claim or a sweep page), where hiredis's C
packer is about 8 times faster. Anything hiredis does not take as redis-py would (surrogate-
escaped keys, bytearrays, booleans and None, which redis-py refuses) goes through redis-py's
own packer, so what is sent and what is refused do not change.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection


class _HiredisPacking(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        if isinstance(head, str) and " " in head:  # "CONFIG SET" and the like, as redis-py does
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(args)]
        except (TypeError, UnicodeEncodeError):
            return super().pack_command(*args)


class Connection(_HiredisPacking, aioredis.Connection):
    """redis-py's asyncio TCP connection with hiredis packing."""


class SSLConnection(_HiredisPacking, aioredis.SSLConnection):
    """The same over TLS (rediss://)."""


class UnixConnection(_HiredisPacking, aioredis.UnixDomainSocketConnection):
    """The same over a unix socket (unix://)."""


_CLASSES: dict[str, type[AbstractConnection]] = {
    "redis": Connection,
    "rediss": SSLConnection,
    "unix": UnixConnection,
}


def from_url(url: str, **options: Any) -> aioredis.Redis:
    """`redis.asyncio.Redis.from_url` with the connection class of the URL's scheme.

    The class must match the scheme: redis-py 8.2 lets an explicit `connection_class` replace
    the one the URL implies, and a TCP class handed a unix socket's `path` fails to start."""
    scheme = urlsplit(url).scheme.lower()
    chosen = _CLASSES.get(scheme)
    if chosen is not None:
        options.setdefault("connection_class", chosen)
    client: aioredis.Redis = aioredis.Redis.from_url(url, **options)
    return client
