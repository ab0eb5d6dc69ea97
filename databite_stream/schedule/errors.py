"""Typed errors of the scheduling core.

Owns every exception the ``schedule`` package raises on purpose. Invariant: each message names
the offending input (the schedule text and, for cron, the bad field and token) and says what
would be accepted instead, so it can be shown to a user or written to a dead letter as is.
"""

from __future__ import annotations

__all__ = (
    "IdentityError",
    "PolicyError",
    "ScheduleError",
    "ScheduleKindError",
)


class ScheduleError(ValueError):
    """A schedule string, time zone, bound or jitter that cannot be used.

    Raised at parse time (never silently turned into "every hour", unlike the reference
    engine), or when a registered custom schedule kind misbehaves.
    """


class ScheduleKindError(ScheduleError):
    """A custom schedule kind is registered twice, has a bad name, or is unknown."""


class IdentityError(ValueError):
    """A string is not a well-formed job id or run id (see :mod:`.identity`)."""


class PolicyError(ValueError):
    """A scheduling :class:`~databite_stream.schedule.job.Policy` with an impossible setting."""
