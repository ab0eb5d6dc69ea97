"""Shared helpers for the schedule tests: ISO <-> epoch-ms conversion."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = ("iso", "ms")


def ms(text: str) -> int:
    """Epoch ms of an ISO-8601 timestamp with an offset (``...+02:00`` or ``...Z``)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert dt.tzinfo is not None, "give an explicit offset"
    return int(dt.timestamp() * 1000)


def iso(value_ms: int, tz: str = "UTC") -> str:
    """ISO-8601 with offset of ``value_ms`` in zone ``tz``."""
    return datetime.fromtimestamp(value_ms / 1000, ZoneInfo(tz)).isoformat()
