"""Schedule specs: the single parser ``parse_schedule`` and the immutable ``ScheduleSpec``.

Owns the schedule language and its canonical text form:

* **interval** — ``"30s" "15m" "1h" "1d" "1w"`` and compounds with each unit at most once,
  largest first (``"1h30m"``); a bare number means minutes (the reference engine's
  ``syncInterval``); minimum 1 s. Intervals are elapsed time (a day is 86 400 s) and never
  rounded to a cron (``"90m"`` stays 90 minutes). Canonical text: ``"1h30m"`` for ``"90m"``,
  ``"15m"`` for ``"15"``.
* **cron** — 5 fields, 6 with leading seconds, or an alias; see :mod:`.cron`.
* **custom** — ``"<kind>"`` or ``"<kind>:<arg>"`` for a kind in :mod:`.kinds`.

Options (zone, bounds, jitter) are keyword arguments of :func:`parse_schedule`, or ``; key=value``
suffixes of the text, which is what ``str(spec)`` writes, so one string stores a whole spec:
``"0 9 * * mon-fri; tz=Europe/Berlin; jitter_ms=60000"``. Invariants: a ``ScheduleSpec`` built
by ``parse_schedule`` is valid (zone exists, ``start_ms <= end_ms``, ``jitter_ms >= 0``) and
``parse_schedule(str(spec)) == spec``. Bounds are inclusive and apply to the jittered instant.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from databite_stream.schedule.cron import CRON_ALIASES, CronRule, parse_cron
from databite_stream.schedule.errors import ScheduleError, ScheduleKindError
from databite_stream.schedule.kinds import KIND_NAME, get_schedule_kind, registry_generation

__all__ = (
    "CustomRule",
    "IntervalRule",
    "Rule",
    "ScheduleSpec",
    "parse_interval",
    "parse_schedule",
)

_UNITS: Final = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_INTERVAL_TOKENS: Final = re.compile(r"([0-9]+)([a-zA-Z]+)")


@dataclass(frozen=True, slots=True)
class IntervalRule:
    """A fixed-rate interval; runs land on ``anchor + jitter + k * seconds``."""

    seconds: int
    """Period in seconds (>= 1)."""

    @property
    def text(self) -> str:
        """Canonical text, largest unit first, e.g. ``"1h30m"``."""
        rest, out = self.seconds, []
        for unit, size in _UNITS.items():
            count, rest = divmod(rest, size)
            if count:
                out.append(f"{count}{unit}")
        return "".join(out)

    @property
    def period_ms(self) -> int:
        """Period in milliseconds."""
        return self.seconds * 1000


@dataclass(frozen=True, slots=True)
class CustomRule:
    """A schedule of a registered custom kind."""

    kind: str
    """Registered kind name."""
    arg: str | None = None
    """Everything after the first ``:``, or ``None`` when there was no ``:``."""

    @property
    def text(self) -> str:
        """Canonical text, ``kind`` or ``kind:arg``."""
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"


Rule = IntervalRule | CronRule | CustomRule


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A parsed schedule: what fires (``rule``) and where/when it may fire.

    Build it with :func:`parse_schedule`, which validates every field.
    """

    rule: Rule
    """The interval, cron or custom rule."""
    tz: str = "UTC"
    """IANA zone in which cron wall-clock times are read (intervals ignore it)."""
    start_ms: int | None = None
    """No run before this instant (epoch ms, inclusive); ``None`` = no lower bound."""
    end_ms: int | None = None
    """No run after this instant (epoch ms, inclusive); ``None`` = runs forever."""
    jitter_ms: int = 0
    """Runs are shifted by a stable per-job offset in ``[0, jitter_ms)``; 0 = no jitter."""

    @property
    def kind(self) -> Literal["interval", "cron", "custom"]:
        """Which kind of rule this is."""
        if isinstance(self.rule, IntervalRule):
            return "interval"
        return "cron" if isinstance(self.rule, CronRule) else "custom"

    @property
    def text(self) -> str:
        """Canonical rule text without options, e.g. ``"0 9 * * mon-fri"``."""
        return self.rule.text

    @property
    def zone(self) -> ZoneInfo:
        """The zone object (cached by :mod:`zoneinfo`)."""
        return ZoneInfo(self.tz)

    def __str__(self) -> str:
        """Canonical wire form: the rule text plus non-default options; parses back equal."""
        parts = [self.rule.text]
        if self.tz != "UTC":
            parts.append(f"tz={self.tz}")
        if self.start_ms is not None:
            parts.append(f"start_ms={self.start_ms}")
        if self.end_ms is not None:
            parts.append(f"end_ms={self.end_ms}")
        if self.jitter_ms:
            parts.append(f"jitter_ms={self.jitter_ms}")
        return "; ".join(parts)


def parse_interval(text: str) -> IntervalRule:
    """Parse ``"15m"``, ``"1h30m"`` or a bare number of minutes; raise :class:`ScheduleError`."""
    raw = text.strip()
    if raw.isascii() and raw.isdigit():
        seconds = int(raw) * 60
    else:
        pos, seconds, previous = 0, 0, None
        for match in _INTERVAL_TOKENS.finditer(raw):
            if match.start() != pos:
                break
            number, unit = match.groups()
            if unit not in _UNITS:
                raise ScheduleError(
                    f"{text!r}: unknown interval unit {unit!r} in {match.group()!r}; "
                    "use s, m, h, d or w (e.g. '1h30m')"
                )
            if previous is not None and _UNITS[unit] >= _UNITS[previous]:
                raise ScheduleError(
                    f"{text!r}: interval unit {unit!r} in {match.group()!r} must come once, after "
                    "larger units (order w d h m s, e.g. '1h30m')"
                )
            previous = unit
            seconds += int(number) * _UNITS[unit]
            pos = match.end()
        if pos != len(raw) or previous is None:
            if re.fullmatch(r"[0-9]*[.,][0-9]+[a-z]*", raw):
                raise ScheduleError(
                    f"{text!r}: fractions are not supported; combine units instead ('1h30m')"
                )
            bad = raw[pos:] or raw
            raise ScheduleError(
                f"{text!r}: cannot read {bad!r} as an interval; write <number><unit> parts with "
                "units s, m, h, d, w (e.g. '30s', '15m', '1h30m') or a bare number of minutes"
            )
    if seconds < 1:
        raise ScheduleError(f"{text!r}: an interval must be at least 1s")
    return IntervalRule(seconds)


def _parse_rule(text: str) -> Rule:
    expr = text.strip()
    if not expr:
        raise ScheduleError(
            "empty schedule; use an interval ('15m'), cron ('0 9 * * 1-5') or alias ('@daily')"
        )
    words = expr.split()
    if len(words) > 1 and all(_INTERVAL_TOKENS.fullmatch(w) for w in words):
        raise ScheduleError(
            f"{text.strip()!r}: write an interval without spaces, e.g. {''.join(words)!r}"
        )
    if expr.startswith("@") or len(words) > 1:
        return parse_cron(expr)
    if expr[0].isdigit():
        return parse_interval(expr)
    name, colon, arg = expr.partition(":")
    if KIND_NAME.fullmatch(name):
        try:
            kind = get_schedule_kind(name)
        except ScheduleKindError as exc:
            hint = f"; did you mean '@{name}'?" if f"@{name}" in CRON_ALIASES else ""
            raise ScheduleKindError(f"{text.strip()!r}: {exc}{hint}") from None
        rule = CustomRule(name, arg if colon else None)
        if kind.validate is not None:
            try:
                kind.validate(rule.arg)
            except ValueError as exc:
                raise ScheduleError(f"{text!r}: bad argument for kind {name!r}: {exc}") from exc
        return rule
    raise ScheduleError(
        f"{text!r} is not a schedule: use an interval ('30s', '15m', '1h30m', '1d'), a 5- or "
        "6-field cron expression ('0 9 * * 1-5'), an alias ('@daily') or a registered kind"
    )


_OPTION_KEYS: Final = ("tz", "start_ms", "end_ms", "jitter_ms")


def _int_option(text: str, key: str, value: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", value):
        raise ScheduleError(f"{text!r}: option {key}={value!r} must be an integer (epoch ms)")
    return int(value)


def parse_schedule(
    text: str,
    *,
    tz: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    jitter_ms: int | None = None,
) -> ScheduleSpec:
    """Parse a schedule string into a validated :class:`ScheduleSpec`.

    ``text`` is a rule optionally followed by ``; key=value`` options (``tz``, ``start_ms``,
    ``end_ms``, ``jitter_ms``), as written by ``str(spec)``. Keyword arguments give the same
    options; an option given both ways with different values is an error. Defaults: ``tz="UTC"``,
    no bounds, ``jitter_ms=0``. Raises :class:`ScheduleError` with a message naming the bad part.
    Results are memoised (bounded LRU; many jobs share one schedule string, e.g. when a worker
    recovers a million job rows).
    """
    return _parse_cached(text, tz, start_ms, end_ms, jitter_ms, registry_generation())


@functools.lru_cache(maxsize=4096)
def _parse_cached(
    text: str,
    tz: str | None,
    start_ms: int | None,
    end_ms: int | None,
    jitter_ms: int | None,
    generation: int,  # only part of the cache key: when kinds change, parse again
) -> ScheduleSpec:
    rule_text, *option_texts = text.split(";")
    given: dict[str, str] = {}
    for item in option_texts:
        key, eq, value = item.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not eq or key not in _OPTION_KEYS:
            raise ScheduleError(
                f"{text!r}: bad option {item.strip()!r}; options are "
                f"{', '.join(k + '=...' for k in _OPTION_KEYS)}"
            )
        if key in given:
            raise ScheduleError(f"{text!r}: option {key!r} is given twice")
        given[key] = value
    rule = _parse_rule(rule_text)

    def pick_int(key: str, keyword: int | None) -> int | None:
        inline = _int_option(text, key, given[key]) if key in given else None
        if inline is not None and keyword is not None and inline != keyword:
            raise ScheduleError(f"{text!r}: {key}={inline} conflicts with the argument {keyword}")
        return inline if inline is not None else keyword

    inline_tz = given.get("tz")
    if inline_tz is not None and tz is not None and inline_tz != tz:
        raise ScheduleError(f"{text!r}: tz={inline_tz} conflicts with the argument tz={tz!r}")
    zone_name = inline_tz if inline_tz is not None else (tz if tz is not None else "UTC")
    try:
        if not zone_name:
            raise ValueError(zone_name)
        ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(
            f"{text!r}: unknown time zone {zone_name!r}; use an IANA name such as "
            "'Europe/Berlin' or 'UTC'"
        ) from None
    start = pick_int("start_ms", start_ms)
    end = pick_int("end_ms", end_ms)
    jitter = pick_int("jitter_ms", jitter_ms) or 0
    if start is not None and end is not None and end < start:
        raise ScheduleError(f"{text!r}: end_ms {end} is before start_ms {start}")
    if jitter < 0:
        raise ScheduleError(f"{text!r}: jitter_ms must be >= 0, got {jitter}")
    return ScheduleSpec(rule, zone_name, start, end, jitter)
