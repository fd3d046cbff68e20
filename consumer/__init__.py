"""conversation-archiver: archive agent conversation checkpoints from Redis into PostgreSQL."""

from __future__ import annotations

__version__ = "0.1.0"
