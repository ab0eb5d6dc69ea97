"""Next-run maths: ``next_run_after(spec, after_ms, anchor_ms=..., job_id=...)``.

Owns the meaning of "the next run" for every schedule kind:

* **interval** — fixed rate on a grid anchored at the job's creation:
  ``anchor_ms + offset + k * period`` for integer ``k`` (never "finish time + period", the
  reference engine's drifting fixed delay);
* **cron** — the next matching wall-clock time in the spec's zone (DST rules in :mod:`.cron`),
  plus the job's offset;
* **custom** — the registered kind's function, plus the job's offset;

where ``offset = jitter_offset_ms(job_id, spec.jitter_ms)`` is a stable value in
``[0, jitter_ms)`` from a keyed BLAKE2b of the job id (never Python's salted ``hash()``), so a
thousand jobs on ``"0 * * * *"`` spread out while each one's times are reproducible on any
worker. The offset is applied by querying the base schedule at ``after_ms - offset``, which keeps
the result strictly after ``after_ms``.

Exhaustion: when the spec's ``end_ms`` has passed (or a custom kind returns ``None``) the
result is ``None`` — chosen over an exception so that mypy forces every caller to handle it.

Invariants: the result is ``None`` or ``> after_ms``; it is non-decreasing in ``after_ms``; it
lies within ``[start_ms, end_ms]``. No clock is read: all instants are epoch ms (UTC) ints.
"""

from __future__ import annotations

import hashlib

from databite_stream.schedule.cron import CronRule, compiled_cron
from databite_stream.schedule.errors import ScheduleError
from databite_stream.schedule.kinds import get_schedule_kind
from databite_stream.schedule.spec import IntervalRule, ScheduleSpec

__all__ = ("jitter_offset_ms", "next_run_after")

_JITTER_KEY = b"databite-jitter"


def jitter_offset_ms(job_id: str, jitter_ms: int) -> int:
    """The job's stable offset in ``[0, jitter_ms)`` (0 when ``jitter_ms <= 0``)."""
    if jitter_ms <= 0:
        return 0
    digest = hashlib.blake2b(job_id.encode("utf-8"), digest_size=8, key=_JITTER_KEY).digest()
    return int.from_bytes(digest, "big") % jitter_ms


def next_run_after(
    spec: ScheduleSpec,
    after_ms: int,
    *,
    anchor_ms: int = 0,
    job_id: str = "",
) -> int | None:
    """The first run of ``spec`` strictly after ``after_ms`` (epoch ms), or ``None`` if none.

    ``anchor_ms`` is the interval grid's origin (the job's creation; 0 = epoch-aligned, so
    ``"1h"`` fires on the hour) and ``job_id`` seeds the jitter offset.
    """
    start = spec.start_ms
    if start is not None and after_ms < start:
        after_ms = start - 1
    offset = jitter_offset_ms(job_id, spec.jitter_ms) if spec.jitter_ms else 0
    rule = spec.rule
    if isinstance(rule, IntervalRule):
        base = anchor_ms + offset
        period = rule.seconds * 1000
        result: int | None = base + ((after_ms - base) // period + 1) * period
    elif isinstance(rule, CronRule):
        result = compiled_cron(rule, spec.tz).next_after(after_ms - offset) + offset
    else:
        kind = get_schedule_kind(rule.kind)
        raw = kind.next_run(rule.arg, after_ms - offset, spec.zone)
        if raw is not None and (not isinstance(raw, int) or raw <= after_ms - offset):
            raise ScheduleError(
                f"schedule kind {rule.kind!r} returned {raw!r} for after_ms={after_ms - offset}; "
                "it must return an int instant strictly after it, or None"
            )
        result = None if raw is None else raw + offset
    end = spec.end_ms
    if result is not None and end is not None and result > end:
        return None
    return result
