"""Parsing schedule strings: accepted forms, canonical text, and errors naming the bad token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from databite_stream.schedule import (
    CronRule,
    CustomRule,
    IntervalRule,
    ScheduleError,
    ScheduleKindError,
    parse_schedule,
    register_schedule_kind,
    unregister_schedule_kind,
)


@pytest.mark.parametrize(
    ("text", "seconds", "canonical"),
    [
        ("30s", 30, "30s"),
        ("15m", 900, "15m"),
        ("1h", 3600, "1h"),
        ("1d", 86_400, "1d"),
        ("1w", 604_800, "1w"),
        ("1h30m", 5400, "1h30m"),
        ("90m", 5400, "1h30m"),  # stays 90 minutes (the reference made it hourly)
        ("45m", 2700, "45m"),
        ("15", 900, "15m"),  # bare number = minutes (syncInterval)
        ("1", 60, "1m"),
        ("2d12h", 216_000, "2d12h"),
        ("1w2d3h4m5s", 788_645, "1w2d3h4m5s"),
        ("7d", 604_800, "1w"),
        (" 5m ", 300, "5m"),
        ("1s", 1, "1s"),
    ],
)
def test_intervals(text: str, seconds: int, canonical: str) -> None:
    spec = parse_schedule(text)
    assert spec.rule == IntervalRule(seconds)
    assert spec.kind == "interval"
    assert spec.text == canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("0 9 * * 1-5", "0 9 * * 1-5"),
        ("0  9 *  * MON-FRI", "0 9 * * mon-fri"),
        ("0 0 1 JAN *", "0 0 1 jan *"),
        ("*/15 * * * *", "*/15 * * * *"),
        ("0,30 8-18/2 * * *", "0,30 8-18/2 * * *"),
        ("30 */5 * * * *", "30 */5 * * * *"),
        ("0 0 L * *", "0 0 l * *"),
        ("0 0 ? * sun", "0 0 ? * sun"),
        ("@yearly", "@yearly"),
        ("@annually", "@yearly"),
        ("@monthly", "@monthly"),
        ("@weekly", "@weekly"),
        ("@daily", "@daily"),
        ("@midnight", "@daily"),
        ("@HOURLY", "@hourly"),
    ],
)
def test_cron_forms(text: str, canonical: str) -> None:
    spec = parse_schedule(text)
    assert isinstance(spec.rule, CronRule)
    assert spec.text == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 25 * * *", "'0 25 * * *': hour 25 is out of range 0-23"),
        ("60 * * * *", "minute 60 is out of range 0-59"),
        ("0 0 32 * *", "day-of-month 32 is out of range 1-31"),
        ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week 8 is out of range 0-7"),
        ("61 0 0 * * *", "second 61 is out of range 0-59"),
        ("0 0 * foo *", "month 'foo' is not a number (names: jan,"),
        ("0 0 * * mon-fry", "day-of-week 'fry' is not a number"),
        ("x * * * *", "minute 'x' is not a number"),
        ("*/0 * * * *", "minute step '0' in '*/0' must be a number >= 1"),
        ("*/90 * * * *", "minute step 90 in '*/90' is larger than the field's range"),
        ("0 22-2 * * *", "hour range '22-2' is reversed; write it as '22-23,0-2'"),
        ("0 0 * * fri-mon", "day-of-week range 'fri-mon' is reversed"),
        ("0 0 30 2 *", "day-of-month '30' never occurs in month '2'"),
        ("0 0 31 4,6,9,11 *", "day-of-month '31' never occurs"),
        ("1,,2 * * * *", "minute '1,,2' has an empty list item"),
        ("0 0 1,l * *", "'L' (last day) must be the whole field"),
        ("0 9 * *", "expected 5 cron fields"),
        ("0 0 0 0 * * * *", "got 8"),
        ("@reboot", "unknown cron alias '@reboot'"),
        ("1x", "unknown interval unit 'x' in '1x'"),
        ("1M", "unknown interval unit 'M'"),
        ("30m1h", "interval unit 'h' in '1h' must come once, after larger units"),
        ("1h1h", "interval unit 'h' in '1h' must come once"),
        ("0s", "an interval must be at least 1s"),
        ("0", "an interval must be at least 1s"),
        ("1.5h", "fractions are not supported"),
        ("1h 30m", "write an interval without spaces, e.g. '1h30m'"),
        ("1hh", "unknown interval unit 'hh'"),
        ("5m!", "cannot read '!' as an interval"),
        ("", "empty schedule"),
        ("hourly", "did you mean '@hourly'"),
        ("every-blue-moon", "unknown schedule kind 'every-blue-moon'"),
        ("!!", "is not a schedule"),
        ("15m; tz=Mars/Base", "unknown time zone 'Mars/Base'"),
        ("15m; color=red", "bad option 'color=red'"),
        ("15m; tz=", "unknown time zone ''"),
        ("15m; tz=../etc/passwd", "unknown time zone '../etc/passwd'"),
        ("15m; start_ms=soon", "option start_ms='soon' must be an integer"),
        ("15m; tz=UTC; tz=UTC", "option 'tz' is given twice"),
        ("15m; start_ms=10; end_ms=5", "end_ms 5 is before start_ms 10"),
        ("15m; jitter_ms=-1", "jitter_ms must be >= 0"),
    ],
)
def test_errors_name_the_bad_token(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(text)
    assert message in str(info.value)


def test_keyword_and_inline_options_conflict() -> None:
    with pytest.raises(ScheduleError, match="conflicts"):
        parse_schedule("15m; tz=Europe/Berlin", tz="UTC")
    with pytest.raises(ScheduleError, match="conflicts"):
        parse_schedule("15m; jitter_ms=5", jitter_ms=6)
    same = parse_schedule("15m; tz=Europe/Berlin", tz="Europe/Berlin")
    assert same.tz == "Europe/Berlin"


def test_options_and_canonical_string() -> None:
    spec = parse_schedule(
        "0 9 * * MON-FRI", tz="Europe/Berlin", start_ms=10, end_ms=20, jitter_ms=60_000
    )
    assert str(spec) == (
        "0 9 * * mon-fri; tz=Europe/Berlin; start_ms=10; end_ms=20; jitter_ms=60000"
    )
    assert parse_schedule(str(spec)) == spec
    assert str(parse_schedule("90")) == "1h30m"
    assert spec.zone.key == "Europe/Berlin"


def test_bad_zone_as_keyword() -> None:
    with pytest.raises(ScheduleError, match="unknown time zone 'Nowhere/City'"):
        parse_schedule("@daily", tz="Nowhere/City")


SCHEDULE_TEXTS = st.sampled_from(
    ["30s", "90m", "1h30m", "1d", "0 9 * * mon-fri", "*/5 * * * * *", "@weekly", "0 0 L * *"]
)


@settings(max_examples=100)
@given(
    SCHEDULE_TEXTS,
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
    st.none() | st.integers(0, 2**40),
    st.none() | st.integers(0, 2**40),
    st.integers(0, 10**7),
)
def test_canonical_text_round_trips(
    text: str, tz: str, start: int | None, end: int | None, jitter: int
) -> None:
    if start is not None and end is not None and end < start:
        start, end = end, start
    spec = parse_schedule(text, tz=tz, start_ms=start, end_ms=end, jitter_ms=jitter)
    assert parse_schedule(str(spec)) == spec
    assert parse_schedule(spec.text).rule == spec.rule


@pytest.fixture
def business_hours() -> Iterator[str]:
    from databite_stream.schedule import next_run_after

    inner = parse_schedule("0 9-17 * * mon-fri")

    def next_run(arg: str | None, after_ms: int, zone: object) -> int | None:
        spec = parse_schedule(inner.text, tz=getattr(zone, "key", "UTC"))
        return next_run_after(spec, after_ms)

    def validate(arg: str | None) -> None:
        if arg not in (None, "strict"):
            raise ValueError("argument must be 'strict' or absent")

    register_schedule_kind("every-business-hour", next_run, validate=validate)
    yield "every-business-hour"
    unregister_schedule_kind("every-business-hour")


def test_custom_kind_parses(business_hours: str) -> None:
    assert parse_schedule(business_hours).rule == CustomRule(business_hours, None)
    spec = parse_schedule(f"{business_hours}:strict; tz=Europe/Berlin")
    assert spec.rule == CustomRule(business_hours, "strict")
    assert spec.kind == "custom"
    assert str(spec) == "every-business-hour:strict; tz=Europe/Berlin"


def test_custom_kind_bad_argument(business_hours: str) -> None:
    with pytest.raises(ScheduleError, match="bad argument for kind 'every-business-hour'"):
        parse_schedule(f"{business_hours}:lenient")


def test_registering_twice_is_an_error(business_hours: str) -> None:
    with pytest.raises(ScheduleKindError, match="already registered"):
        register_schedule_kind(business_hours, lambda arg, after, zone: after + 1)


@pytest.mark.parametrize("name", ["Caps", "1st", "with space", "trailing-", "a--b", "@x"])
def test_bad_kind_names(name: str) -> None:
    with pytest.raises(ScheduleKindError, match="is invalid"):
        register_schedule_kind(name, lambda arg, after, zone: after + 1)


def test_parse_cache_follows_the_kind_registry() -> None:
    register_schedule_kind("short-lived", lambda arg, after, zone: after + 1)
    assert parse_schedule("short-lived").rule == CustomRule("short-lived")
    assert parse_schedule("short-lived") is parse_schedule("short-lived")  # memoised
    unregister_schedule_kind("short-lived")
    with pytest.raises(ScheduleKindError, match="unknown schedule kind 'short-lived'"):
        parse_schedule("short-lived")
