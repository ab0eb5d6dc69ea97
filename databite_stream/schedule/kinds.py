"""Registry of custom schedule kinds (the counterpart of the reference's ``calculateNextRun``).

Owns the process-wide mapping ``kind name -> ScheduleKind``. A custom schedule is written
``"<kind>"`` or ``"<kind>:<arg>"`` (e.g. ``"every-business-hour"``,
``"every-business-hour:9-17"``): the kind name is lower-case ``[a-z][a-z0-9]*`` words joined
by single ``-``, so it can never be confused with an interval (starts with a digit), a cron
expression (has spaces) or an alias (starts with ``@``). Everything after the first ``:`` is the
argument, passed verbatim.

Invariants: a name is registered at most once (a second registration raises
:class:`ScheduleKindError`, so two plugins cannot silently override each other); the next-run
function is pure (it receives ``after_ms`` and the zone and must not read the clock) and must
return an instant strictly after ``after_ms`` or ``None`` when the schedule has no more runs.
Register kinds at import time, before schedules are parsed: a worker that does not know a kind
rejects schedules using it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

from databite_stream.schedule.errors import ScheduleKindError

__all__ = (
    "KIND_NAME",
    "NextRunFn",
    "ScheduleKind",
    "ValidateFn",
    "get_schedule_kind",
    "register_schedule_kind",
    "registered_schedule_kinds",
    "registry_generation",
    "unregister_schedule_kind",
)

NextRunFn = Callable[[str | None, int, ZoneInfo], int | None]
"""``(arg, after_ms, zone) -> next instant in epoch ms (> after_ms), or None when exhausted``."""
ValidateFn = Callable[[str | None], None]
"""``(arg) -> None``; raise ``ValueError`` with a readable message for a bad argument."""

KIND_NAME: Final = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


@dataclass(frozen=True, slots=True)
class ScheduleKind:
    """A registered custom schedule kind."""

    name: str
    """The kind name, e.g. ``"every-business-hour"``."""
    next_run: NextRunFn
    """Computes the next run; see :data:`NextRunFn`."""
    validate: ValidateFn | None = None
    """Checks the argument at parse time; ``None`` accepts any argument (or none)."""


_REGISTRY: dict[str, ScheduleKind] = {}
_GENERATION = [0]  # bumped on every change, so parse caches keyed on it never go stale


def registry_generation() -> int:
    """A number that changes whenever a kind is registered or unregistered."""
    return _GENERATION[0]


def register_schedule_kind(
    name: str, next_run: NextRunFn, *, validate: ValidateFn | None = None
) -> ScheduleKind:
    """Register a custom kind; raise :class:`ScheduleKindError` if ``name`` is taken or bad."""
    if not KIND_NAME.fullmatch(name):
        raise ScheduleKindError(
            f"schedule kind name {name!r} is invalid: use lower-case words joined by '-', "
            "starting with a letter (e.g. 'every-business-hour')"
        )
    if name in _REGISTRY:
        raise ScheduleKindError(
            f"schedule kind {name!r} is already registered; unregister it first to replace it"
        )
    kind = ScheduleKind(name, next_run, validate)
    _REGISTRY[name] = kind
    _GENERATION[0] += 1
    return kind


def unregister_schedule_kind(name: str) -> None:
    """Remove a kind (for tests and plugin unloading); unknown names are ignored."""
    if _REGISTRY.pop(name, None) is not None:
        _GENERATION[0] += 1


def get_schedule_kind(name: str) -> ScheduleKind:
    """The registered kind ``name``; raise :class:`ScheduleKindError` if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ScheduleKindError(
            f"unknown schedule kind {name!r} (registered kinds: {known}); use an interval "
            "such as '15m', a cron expression such as '0 9 * * 1-5', or an alias such as '@daily'"
        ) from None


def registered_schedule_kinds() -> tuple[str, ...]:
    """Names of all registered kinds, sorted."""
    return tuple(sorted(_REGISTRY))
