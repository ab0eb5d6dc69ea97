"""Cron expressions: validation with precise errors, and zone-aware next-fire maths.

Owns two things:

1. :func:`parse_cron` turns 5-field (``min hour dom month dow``) and 6-field (leading seconds)
   expressions and the aliases ``@yearly @annually @monthly @weekly @daily @midnight @hourly``
   into a :class:`CronRule`. Supported per field: ``*``, ``?`` (= ``*``, day fields only),
   numbers, names (``jan``-``dec``, ``sun``-``sat``, case-insensitive), ranges ``a-b``, steps
   ``*/n`` ``a-b/n`` ``a/n``, lists, and ``L`` (last day) in day-of-month. Day-of-week ``7`` is
   Sunday. Hand-written rather than delegated to croniter because croniter's errors do not say
   which field or token is wrong (``"[0 25 * * *] is not acceptable, out of range"``), it
   accepts a trailing seconds field and a year field we do not want, and it silently accepts
   steps that are almost always a mistake (``*/90`` in minutes fires once an hour) and
   day/month pairs that never occur (``0 0 30 2 *`` fails only at run time).
2. :class:`CompiledCron` computes the next fire instant after a UTC millisecond timestamp in an
   IANA zone. croniter is used only on *naive wall-clock* seconds (pure calendar arithmetic);
   mapping a wall-clock time to an instant is done here, because croniter 5 gets it wrong for
   ``zoneinfo`` zones (verified: in Europe/Berlin ``0 3 * * *`` on the fall-back day yields
   04:00 CET, and ``30 2 * * *`` the day after fall-back yields 03:30). Our DST rules:

   * a wall time that does not exist (spring forward) fires once, at the first instant after
     the gap (``02:30`` on a 02:00→03:00 day fires at 03:00 new time); several cron times in
     one gap collapse into that single run;
   * a wall time that exists twice (fall back) fires once, at its first occurrence.

   The wall-time → instant map is monotone, so the first candidate whose instant is after the
   query is the answer. Day-of-month/day-of-week follow Vixie cron: if either field starts
   with ``*`` both must match, otherwise either (croniter always ORs them unless told).

Invariants: ``CompiledCron.next_after(t) > t``; results are non-decreasing in ``t``; a compiled
cron is shared by every job with the same (expression, zone) via a bounded LRU, and each keeps
a small contiguous window of upcoming fire instants, so the common call is a ``bisect``.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from databite_stream.schedule.errors import ScheduleError

__all__ = (
    "CRON_ALIASES",
    "CompiledCron",
    "CronRule",
    "compiled_cron",
    "parse_cron",
)

CRON_ALIASES: Final[dict[str, tuple[str, str]]] = {
    # alias -> (canonical alias, expansion)
    "@yearly": ("@yearly", "0 0 1 1 *"),
    "@annually": ("@yearly", "0 0 1 1 *"),
    "@monthly": ("@monthly", "0 0 1 * *"),
    "@weekly": ("@weekly", "0 0 * * 0"),
    "@daily": ("@daily", "0 0 * * *"),
    "@midnight": ("@daily", "0 0 * * *"),
    "@hourly": ("@hourly", "0 * * * *"),
}

# fmt: off
_MONTHS: Final = ("jan", "feb", "mar", "apr", "may", "jun",
                  "jul", "aug", "sep", "oct", "nov", "dec")
# fmt: on
_DAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAYS_IN_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb: leap years


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: dict[str, int]


_SECOND: Final = _Field("second", 0, 59, {})
_FIELDS_5: Final = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTHS)}),
    _Field("day-of-week", 0, 7, {n: i for i, n in enumerate(_DAYS)}),
)
_NAME_OF: Final = {"month": ("jan", "dec"), "day-of-week": ("sun", "sat")}
_NUMBER: Final = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class CronRule:
    """A validated cron expression.

    ``text`` is the canonical form (single spaces, lower case, aliases folded to one spelling);
    the other fields are derived from it and excluded from equality.
    """

    text: str
    """Canonical expression, e.g. ``"0 9 * * mon-fri"`` or ``"@daily"``."""
    croniter_expr: str = field(compare=False, repr=False)
    """Numeric 5- or 6-field form handed to croniter (seconds last, croniter's order)."""
    day_or: bool = field(compare=False, repr=False, default=True)
    """Vixie semantics: OR day-of-month and day-of-week unless one starts with ``*``."""


def _bad(text: str, message: str) -> ScheduleError:
    return ScheduleError(f"{text!r}: {message}")


def _value(text: str, f: _Field, token: str) -> int:
    if token in f.names:
        return f.names[token]
    if not _NUMBER.fullmatch(token):
        hint = f" (names: {', '.join(f.names)})" if f.names else ""
        raise _bad(text, f"{f.name} {token!r} is not a number{hint}")
    value = int(token)
    if not f.lo <= value <= f.hi:
        raise _bad(text, f"{f.name} {value} is out of range {f.lo}-{f.hi}")
    return value


def _parse_field(text: str, f: _Field, raw: str) -> tuple[str, frozenset[int] | None]:
    """Validate one field; return its numeric croniter form and its value set (None = all)."""
    if raw == "?" and f.name in ("day-of-month", "day-of-week"):
        raw = "*"
    if raw == "*":
        return "*", None
    if raw == "l" and f.name == "day-of-month":
        return "L", None
    out: list[str] = []
    values: set[int] = set()
    for item in raw.split(","):
        if not item:
            raise _bad(text, f"{f.name} {raw!r} has an empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text) or int(step_text) < 1:
                raise _bad(text, f"{f.name} step {step_text!r} in {item!r} must be a number >= 1")
            step = int(step_text)
            hint = "; for 'every 90 minutes' use an interval such as '90m'" if f.lo == 0 else ""
            if step > f.hi - f.lo:
                raise _bad(
                    text,
                    f"{f.name} step {step} in {item!r} is larger than the field's range "
                    f"{f.lo}-{f.hi} and would fire once per cycle{hint}",
                )
        if base == "*":
            lo, hi = f.lo, f.hi
            numeric = "*"
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = _value(text, f, a), _value(text, f, b)
            if f.name == "day-of-week" and hi == 0 and lo > 0:
                hi = 7  # "fri-sun": Sunday at the end of a range is 7
            if lo > hi:
                first, last = _NAME_OF[f.name] if a in f.names else (str(f.lo), str(f.hi))
                raise _bad(
                    text,
                    f"{f.name} range {base!r} is reversed; write it as '{a}-{last},{first}-{b}'",
                )
            numeric = f"{lo}-{hi}"
        else:
            if base == "l" and f.name == "day-of-month":
                raise _bad(text, f"{f.name} 'L' (last day) must be the whole field")
            lo = _value(text, f, base)
            hi = f.hi if slash else lo
            numeric = f"{lo}-{hi}" if slash else str(lo)
        out.append(f"{numeric}/{step}" if slash else numeric)
        values.update(range(lo, hi + 1, step))
    return ",".join(out), frozenset(values)


def parse_cron(text: str) -> CronRule:
    """Validate a cron expression or alias; raise :class:`ScheduleError` naming the bad token."""
    stripped = " ".join(text.lower().split())
    if stripped.startswith("@"):
        if stripped not in CRON_ALIASES:
            raise _bad(
                text, f"unknown cron alias {stripped!r}; use one of {', '.join(CRON_ALIASES)}"
            )
        canonical, expansion = CRON_ALIASES[stripped]
        return CronRule(canonical, expansion, day_or=False)  # one day field is always "*"
    parts = stripped.split(" ")
    fields: tuple[_Field, ...]
    if len(parts) == 6:
        fields = (_SECOND, *_FIELDS_5)
    elif len(parts) == 5:
        fields = _FIELDS_5
    else:
        raise _bad(
            text,
            f"expected 5 cron fields (minute hour day-of-month month day-of-week) or 6 with "
            f"leading seconds, got {len(parts)}",
        )
    numeric: list[str] = []
    sets: list[frozenset[int] | None] = []
    for f, raw in zip(fields, parts, strict=True):
        form, values = _parse_field(text, f, raw)
        numeric.append(form)
        sets.append(values)
    dom_raw, month_raw, dow_raw = parts[-3], parts[-2], parts[-1]
    dom_set, month_set = sets[-3], sets[-2]
    dow_unrestricted = dow_raw in ("*", "?")
    if dom_set is not None and dow_unrestricted:
        months = month_set if month_set is not None else frozenset(range(1, 13))
        if not any(min(dom_set) <= _DAYS_IN_MONTH[m - 1] for m in months):
            raise _bad(
                text,
                f"day-of-month {dom_raw!r} never occurs in month {month_raw!r}, so it never fires",
            )
    day_or = not (dom_raw.startswith(("*", "?")) or dow_raw.startswith(("*", "?")))
    if len(numeric) == 6:
        numeric = [*numeric[1:], numeric[0]]  # croniter wants seconds last
    return CronRule(" ".join(parts), " ".join(numeric), day_or=day_or)


_SEGMENT: Final = 32  # fire instants computed per cache miss
_MAX_WINDOW: Final = 128  # fire instants kept per compiled cron
_EPOCH: Final = datetime(1970, 1, 1)


class CompiledCron:
    """Next-fire maths for one (cron, zone) pair, with a window of precomputed instants.

    The window ``(start_ms, instants)`` holds *every* fire instant in
    ``(start_ms, instants[-1]]``, so any query in ``[start_ms, instants[-1])`` is a ``bisect``.
    It slides forward with time and grows backwards over small gaps, so per-job jitter (queries
    at ``after - offset``) keeps hitting it; a query far outside it starts a new window (so a
    burst of catch-up queries in the past is cached too). Not thread-safe by design (the
    scheduler handles one partition in one task); a lost race could only recompute a window,
    never return a wrong time.
    """

    __slots__ = ("_iter", "_utc", "_window", "_zone", "rule")

    def __init__(self, rule: CronRule, zone: ZoneInfo) -> None:
        self.rule = rule
        self._zone = zone
        self._utc = zone.key in ("UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Zulu")
        self._iter = croniter(rule.croniter_expr, 0.0, day_or=rule.day_or)
        self._window: tuple[int, list[int]] | None = None

    def next_after(self, after_ms: int) -> int:
        """The first fire instant (epoch ms) strictly after ``after_ms``."""
        window = self._window
        if window is not None:
            start, instants = window
            if start <= after_ms < instants[-1]:
                return instants[bisect.bisect_right(instants, after_ms)]
        return self._miss(after_ms)

    def next_after_uncached(self, after_ms: int) -> int:
        """Same as :meth:`next_after`, bypassing the window (the cold path, for benchmarks)."""
        return self._compute(after_ms, 1)[0]

    def _miss(self, after_ms: int) -> int:
        window = self._window
        if window is None:
            self._window = (after_ms, self._compute(after_ms, _SEGMENT))
        else:
            start, instants = window
            span = instants[-1] - start
            if after_ms >= instants[-1]:
                if after_ms - instants[-1] <= span:  # just past the end: extend forward
                    merged = instants + self._compute(instants[-1], _SEGMENT)
                    drop = max(0, len(merged) - _MAX_WINDOW)
                    self._window = (merged[drop - 1] if drop else start, merged[drop:])
                else:  # far ahead: start over
                    self._window = (after_ms, self._compute(after_ms, _SEGMENT))
            else:  # before the window: grow it backwards over a small gap, else start over
                head = self._compute(after_ms, _SEGMENT, stop_at=instants[0])
                if head[-1] >= instants[0]:
                    head = [t for t in head if t < instants[0]] + instants
                self._window = (after_ms, head[:_MAX_WINDOW])
        start, instants = self._window
        if not start <= after_ms < instants[-1]:  # window too short to reach: answer directly
            return self._compute(after_ms, 1)[0]
        return instants[bisect.bisect_right(instants, after_ms)]

    def _compute(self, after_ms: int, count: int, stop_at: int | None = None) -> list[int]:
        """Fire instants after ``after_ms``: ``count`` of them, or up to the first >= stop_at."""
        after_s = after_ms // 1000
        wall = after_s if self._utc else after_s + self._offset_at(after_s)
        it = self._iter
        it.set_current(float(wall), force=True)
        out: list[int] = []
        while len(out) < count:
            try:
                candidate = int(it.get_next(float))
            except CroniterBadDateError as exc:  # only for impossible AND day combinations
                raise ScheduleError(
                    f"{self.rule.text!r}: no matching date within croniter's search window, "
                    "so it never fires"
                ) from exc
            instant_ms = (candidate if self._utc else self._wall_to_instant(candidate)) * 1000
            if instant_ms <= after_ms or (out and instant_ms == out[-1]):
                continue  # fall-back second occurrence, or several gap times collapsed
            out.append(instant_ms)
            if stop_at is not None and instant_ms >= stop_at:
                break
        return out

    def _offset_at(self, instant_s: int) -> int:
        offset = datetime.fromtimestamp(instant_s, self._zone).utcoffset()
        assert offset is not None
        return int(offset.total_seconds())

    def _wall_to_instant(self, wall_s: int) -> int:
        naive = _EPOCH + timedelta(seconds=wall_s)
        off0 = naive.replace(tzinfo=self._zone).utcoffset()
        off1 = naive.replace(tzinfo=self._zone, fold=1).utcoffset()
        assert off0 is not None
        assert off1 is not None
        o0, o1 = int(off0.total_seconds()), int(off1.total_seconds())
        if o0 >= o1:  # unique, or ambiguous (fall back): the first occurrence uses o0
            return wall_s - o0
        # Spring-forward gap: the first instant at which the offset becomes o1 (the transition).
        lo, hi = wall_s - o1, wall_s - o0  # offset(lo) == o0 < offset(hi) == o1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._offset_at(mid) == o1:
                hi = mid
            else:
                lo = mid
        return hi


@functools.lru_cache(maxsize=4096)
def compiled_cron(rule: CronRule, tz: str) -> CompiledCron:
    """The shared :class:`CompiledCron` for ``rule`` in zone ``tz`` (bounded LRU)."""
    return CompiledCron(rule, ZoneInfo(tz))
