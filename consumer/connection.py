"""The TCP connection our Redis clients use: redis-py's, with commands packed by hiredis.

redis-py's asyncio connection packs every argument in Python (about 2.8 µs each); the archive
path sends scripts with a thousand keys and more (a claim or a sweep page), where hiredis's C
packer is about 8 times faster. Anything hiredis does not take as redis-py would (surrogate-
escaped keys, bytearrays, booleans and None, which redis-py refuses) goes through redis-py's
own packer, so what is sent and what is refused do not change.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis


class Connection(aioredis.Connection):
    """redis-py's asyncio TCP connection with hiredis packing (unix and TLS URLs keep theirs)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        if isinstance(head, str) and " " in head:  # "CONFIG SET" and the like, as redis-py does
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(args)]
        except (TypeError, UnicodeEncodeError):
            return super().pack_command(*args)


def from_url(url: str, **options: Any) -> aioredis.Redis:
    """`redis.asyncio.Redis.from_url` with our connection class for redis:// URLs."""
    client: aioredis.Redis = aioredis.Redis.from_url(url, connection_class=Connection, **options)
    return client
