"""next_run_after: tables for intervals, cron, aliases and DST; properties over random times."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from databite_stream.schedule import (
    CronRule,
    ScheduleError,
    jitter_offset_ms,
    next_run_after,
    parse_schedule,
    register_schedule_kind,
    unregister_schedule_kind,
)
from databite_stream.schedule.cron import compiled_cron

from .helpers import iso, ms

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"


def _series(text: str, tz: str, after: str, count: int) -> list[str]:
    spec = parse_schedule(text, tz=tz)
    out, t = [], ms(after)
    for _ in range(count):
        nxt = next_run_after(spec, t)
        assert nxt is not None
        out.append(iso(nxt, tz))
        t = nxt
    return out


CRON_TABLE = [
    # --- Europe/Berlin spring forward 2024-03-31 02:00 CET -> 03:00 CEST
    (
        "30 2 * * *",
        BERLIN,
        "2024-03-30T12:00+01:00",
        ["2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"],
    ),
    (
        "0 2 * * *",
        BERLIN,
        "2024-03-30T12:00+01:00",
        ["2024-03-31T03:00:00+02:00", "2024-04-01T02:00:00+02:00"],
    ),
    (
        "*/15 * * * *",
        BERLIN,
        "2024-03-31T01:40+01:00",
        ["2024-03-31T01:45:00+01:00", "2024-03-31T03:00:00+02:00", "2024-03-31T03:15:00+02:00"],
    ),
    # --- Europe/Berlin fall back 2024-10-27 03:00 CEST -> 02:00 CET
    (
        "30 2 * * *",
        BERLIN,
        "2024-10-26T12:00+02:00",
        ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"],
    ),
    (
        "0 3 * * *",
        BERLIN,
        "2024-10-26T12:00+02:00",
        ["2024-10-27T03:00:00+01:00", "2024-10-28T03:00:00+01:00"],
    ),
    (
        "0 * * * *",
        BERLIN,
        "2024-10-27T01:30+02:00",
        ["2024-10-27T02:00:00+02:00", "2024-10-27T03:00:00+01:00", "2024-10-27T04:00:00+01:00"],
    ),
    ("30 2 * * *", BERLIN, "2024-10-27T02:10+01:00", ["2024-10-28T02:30:00+01:00"]),
    ("*/30 * * * *", BERLIN, "2024-10-27T02:10+01:00", ["2024-10-27T03:00:00+01:00"]),
    # --- America/New_York: 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST
    (
        "30 2 * * *",
        NEW_YORK,
        "2024-03-09T12:00-05:00",
        ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"],
    ),
    (
        "30 1 * * *",
        NEW_YORK,
        "2024-11-02T12:00-04:00",
        ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"],
    ),
    (
        "0 9 * * 1-5",
        NEW_YORK,
        "2024-03-08T10:00-05:00",
        ["2024-03-11T09:00:00-04:00", "2024-03-12T09:00:00-04:00"],
    ),
    # --- Australia/Lord_Howe: a 30-minute shift. 2024-04-07 02:00 (+11) -> 01:30 (+10:30);
    #     2024-10-06 02:00 (+10:30) -> 02:30 (+11)
    (
        "15 2 * * *",
        LORD_HOWE,
        "2024-10-05T12:00+10:30",
        ["2024-10-06T02:30:00+11:00", "2024-10-07T02:15:00+11:00"],
    ),
    (
        "0,30 2 * * *",
        LORD_HOWE,
        "2024-10-06T01:00+10:30",
        ["2024-10-06T02:30:00+11:00", "2024-10-07T02:00:00+11:00"],
    ),
    (
        "45 1 * * *",
        LORD_HOWE,
        "2024-04-06T12:00+11:00",
        ["2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"],
    ),
    (
        "*/30 * * * *",
        LORD_HOWE,
        "2024-04-07T01:10+11:00",
        ["2024-04-07T01:30:00+11:00", "2024-04-07T02:00:00+10:30"],
    ),
    # --- month ends and leap days
    (
        "0 0 L * *",
        "UTC",
        "2024-01-15T00:00Z",
        [
            "2024-01-31T00:00:00+00:00",
            "2024-02-29T00:00:00+00:00",
            "2024-03-31T00:00:00+00:00",
            "2024-04-30T00:00:00+00:00",
        ],
    ),
    (
        "0 0 29 2 *",
        "UTC",
        "2024-03-01T00:00Z",
        ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"],
    ),
    ("0 0 29 2 *", "UTC", "2096-03-01T00:00Z", ["2104-02-29T00:00:00+00:00"]),
    (
        "0 0 31 * *",
        "UTC",
        "2024-01-31T00:00Z",
        ["2024-03-31T00:00:00+00:00", "2024-05-31T00:00:00+00:00"],
    ),
    ("0 12 30 * *", "UTC", "2024-01-30T12:00Z", ["2024-03-30T12:00:00+00:00"]),
    (
        "0 0 1 jan,jul *",
        "UTC",
        "2023-12-31T23:59:59Z",
        ["2024-01-01T00:00:00+00:00", "2024-07-01T00:00:00+00:00"],
    ),
    # --- aliases
    ("@yearly", "UTC", "2024-06-01T00:00Z", ["2025-01-01T00:00:00+00:00"]),
    ("@annually", "UTC", "2024-12-31T23:59:59Z", ["2025-01-01T00:00:00+00:00"]),
    ("@monthly", "UTC", "2024-01-31T12:00Z", ["2024-02-01T00:00:00+00:00"]),
    ("@weekly", "UTC", "2024-03-01T00:00Z", ["2024-03-03T00:00:00+00:00"]),
    (
        "@daily",
        BERLIN,
        "2024-03-30T23:30+01:00",
        ["2024-03-31T00:00:00+01:00", "2024-04-01T00:00:00+02:00"],
    ),
    ("@midnight", "UTC", "2024-01-01T00:00Z", ["2024-01-02T00:00:00+00:00"]),
    ("@hourly", "UTC", "2024-01-01T00:00Z", ["2024-01-01T01:00:00+00:00"]),
    # --- 6 fields (leading seconds)
    (
        "*/20 * * * * *",
        "UTC",
        "2024-03-01T00:00:00Z",
        ["2024-03-01T00:00:20+00:00", "2024-03-01T00:00:40+00:00", "2024-03-01T00:01:00+00:00"],
    ),
    ("30 0 9 * * mon", "UTC", "2024-03-01T00:00Z", ["2024-03-04T09:00:30+00:00"]),
    ("30 30 2 * * *", BERLIN, "2024-03-30T12:00+01:00", ["2024-03-31T03:00:00+02:00"]),
    # --- day-of-month / day-of-week: OR unless one starts with '*' (Vixie cron)
    (
        "0 0 1 * mon",
        "UTC",
        "2024-01-29T00:00Z",
        ["2024-02-01T00:00:00+00:00", "2024-02-05T00:00:00+00:00"],
    ),
    ("0 0 */10 * mon", "UTC", "2024-01-01T00:00Z", ["2024-03-11T00:00:00+00:00"]),
    ("0 0 * * 7", "UTC", "2024-03-01T00:00Z", ["2024-03-03T00:00:00+00:00"]),
    (
        "0 0 * * fri-sun",
        "UTC",
        "2024-03-01T00:00Z",
        ["2024-03-02T00:00:00+00:00", "2024-03-03T00:00:00+00:00", "2024-03-08T00:00:00+00:00"],
    ),
]


@pytest.mark.parametrize(("text", "tz", "after", "expected"), CRON_TABLE)
def test_cron_table(text: str, tz: str, after: str, expected: list[str]) -> None:
    assert _series(text, tz, after, len(expected)) == expected


@pytest.mark.parametrize(("text", "tz", "after", "expected"), CRON_TABLE)
def test_cron_table_cold_path_agrees(text: str, tz: str, after: str, expected: list[str]) -> None:
    spec = parse_schedule(text, tz=tz)
    assert isinstance(spec.rule, CronRule)
    first = compiled_cron(spec.rule, tz).next_after_uncached(ms(after))
    assert iso(first, tz) == expected[0]


def test_sub_second_after() -> None:
    spec = parse_schedule("*/20 * * * * *")
    fire = ms("2024-03-01T00:00:20Z")
    assert next_run_after(spec, fire - 1) == fire
    assert next_run_after(spec, fire) == fire + 20_000
    assert next_run_after(spec, fire + 500) == fire + 20_000


ANCHOR = ms("2024-01-01T00:07:00Z")


@pytest.mark.parametrize(
    ("text", "anchor", "after", "expected"),
    [
        ("15m", ANCHOR, ANCHOR, ANCHOR + 900_000),
        ("15m", ANCHOR, ANCHOR + 899_999, ANCHOR + 900_000),
        ("15m", ANCHOR, ANCHOR + 900_000, ANCHOR + 1_800_000),
        ("15m", ANCHOR, ANCHOR + 10 * 900_000 + 1, ANCHOR + 11 * 900_000),
        ("90m", 0, ms("2024-01-01T00:00Z"), ms("2024-01-01T01:30Z")),
        ("90m", 0, ms("2024-01-01T01:30Z"), ms("2024-01-01T03:00Z")),
        ("30s", 1_000, 0, 1_000),  # the grid extends before the anchor
        ("1h", 0, ms("2024-01-01T10:20Z"), ms("2024-01-01T11:00Z")),
        ("15", ANCHOR, ANCHOR, ANCHOR + 900_000),
        # a day is 24 h of elapsed time, also across a DST change (intervals ignore the zone)
        (
            "1d; tz=Europe/Berlin",
            ms("2024-03-30T12:00+01:00"),
            ms("2024-03-30T12:00+01:00"),
            ms("2024-03-31T13:00+02:00"),
        ),
    ],
)
def test_interval_table(text: str, anchor: int, after: int, expected: int) -> None:
    assert next_run_after(parse_schedule(text), after, anchor_ms=anchor) == expected


def test_bounds() -> None:
    start, end = ms("2024-01-01T10:30Z"), ms("2024-01-01T12:00Z")
    spec = parse_schedule("@hourly", start_ms=start, end_ms=end)
    assert next_run_after(spec, ms("2024-01-01T00:00Z")) == ms("2024-01-01T11:00Z")
    assert next_run_after(spec, ms("2024-01-01T11:00Z")) == end  # end is inclusive
    assert next_run_after(spec, end) is None
    exact = parse_schedule("@hourly", start_ms=ms("2024-01-01T11:00Z"))
    assert next_run_after(exact, 0) == ms("2024-01-01T11:00Z")  # start is inclusive


def test_jitter_spreads_and_is_stable() -> None:
    spec = parse_schedule("0 * * * *", jitter_ms=60_000)
    hour = ms("2024-01-01T01:00Z")
    times = [next_run_after(spec, hour - 1, job_id=f"conn-{i}/sync") for i in range(1000)]
    assert all(t is not None and hour <= t < hour + 60_000 for t in times)
    assert len(set(times)) > 900
    again = [next_run_after(spec, hour - 1, job_id=f"conn-{i}/sync") for i in range(1000)]
    assert again == times


def test_jitter_offset_is_pinned() -> None:
    # BLAKE2b keyed digest: stable across processes (unlike hash()); pinned to catch changes.
    assert jitter_offset_ms("conn-1/sync", 3_600_000) == PINNED_OFFSET


PINNED_OFFSET = 3_551_498


def test_jitter_offset_pinned_in_fresh_interpreter() -> None:
    import subprocess
    import sys

    code = (
        "from databite_stream.schedule import jitter_offset_ms\n"
        "print(jitter_offset_ms('conn-1/sync', 3_600_000))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert int(out.stdout) == PINNED_OFFSET


def test_custom_kind_gets_jitter_and_bounds() -> None:
    def every_ten_seconds(arg: str | None, after_ms: int, zone: object) -> int | None:
        step = int(arg or "10") * 1000
        return (after_ms // step + 1) * step

    register_schedule_kind("every-n-seconds", every_ten_seconds)
    try:
        spec = parse_schedule("every-n-seconds:10", jitter_ms=5_000, end_ms=100_000)
        off = jitter_offset_ms("j", 5_000)
        assert 0 < off < 5_000
        # the kind is asked for its next time after (after - off), then shifted by off
        assert next_run_after(spec, 10_000 + off - 1, job_id="j") == 10_000 + off
        assert next_run_after(spec, 10_000 + off, job_id="j") == 20_000 + off
        assert next_run_after(spec, 100_000, job_id="j") is None
    finally:
        unregister_schedule_kind("every-n-seconds")


def test_misbehaving_custom_kind_is_reported() -> None:
    register_schedule_kind("broken-kind", lambda arg, after, zone: after)
    try:
        with pytest.raises(ScheduleError, match="'broken-kind' returned"):
            next_run_after(parse_schedule("broken-kind"), 1_000)
    finally:
        unregister_schedule_kind("broken-kind")


def test_unknown_kind_at_run_time() -> None:
    register_schedule_kind("gone-kind", lambda arg, after, zone: after + 1)
    spec = parse_schedule("gone-kind")
    unregister_schedule_kind("gone-kind")
    with pytest.raises(ScheduleError, match="unknown schedule kind 'gone-kind'"):
        next_run_after(spec, 0)


# ---------------------------------------------------------------- properties

CRONS = [
    "* * * * *",
    "*/7 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0 9 * * mon-fri",
    "0 0 L * *",
    "0 0 29 2 *",
    "*/20 * * * * *",
    "0 0 */10 * mon",
    "15,45 1-3 * * *",
    "@weekly",
]
ZONES = ["UTC", BERLIN, NEW_YORK, LORD_HOWE]
TIMES = st.integers(min_value=ms("2000-01-01T00:00Z"), max_value=ms("2040-01-01T00:00Z"))
PROPS = settings(max_examples=150, deadline=None)


@PROPS
@given(st.sampled_from(CRONS), st.sampled_from(ZONES), TIMES, st.integers(0, 10**8))
def test_cron_next_is_after_and_monotone(text: str, tz: str, t: int, delta: int) -> None:
    spec = parse_schedule(text, tz=tz)
    a, b = next_run_after(spec, t), next_run_after(spec, t + delta)
    assert a is not None
    assert b is not None
    assert a > t
    assert b >= a
    assert b > t + delta


@PROPS
@given(st.sampled_from(CRONS), st.sampled_from(ZONES), st.lists(TIMES, min_size=1, max_size=8))
def test_cron_cache_agrees_with_cold_path(text: str, tz: str, times: list[int]) -> None:
    spec = parse_schedule(text, tz=tz)
    assert isinstance(spec.rule, CronRule)
    compiled = compiled_cron(spec.rule, tz)
    for t in times:  # arbitrary order: forwards, backwards, inside and outside the window
        assert compiled.next_after(t) == compiled.next_after_uncached(t)
        nxt = compiled.next_after(t)
        assert compiled.next_after(nxt - 1) == nxt


@PROPS
@given(
    st.sampled_from(CRONS),
    st.sampled_from(ZONES),
    TIMES,
    st.lists(st.integers(-3 * 3_600_000, 3 * 86_400_000), min_size=1, max_size=30),
)
def test_cron_cache_agrees_for_clustered_queries(
    text: str, tz: str, base: int, deltas: list[int]
) -> None:
    # queries near each other (jitter offsets, ticks, re-arms) slide and grow the window
    spec = parse_schedule(text, tz=tz)
    assert isinstance(spec.rule, CronRule)
    compiled = compiled_cron(spec.rule, tz)
    for d in deltas:
        assert compiled.next_after(base + d) == compiled.next_after_uncached(base + d)


@PROPS
@given(st.sampled_from(CRONS), st.sampled_from(ZONES), TIMES)
def test_cron_no_fire_time_is_skipped(text: str, tz: str, t: int) -> None:
    # walking fire to fire never jumps over a fire time found from a point in between
    spec = parse_schedule(text, tz=tz)
    a = next_run_after(spec, t)
    assert a is not None
    b = next_run_after(spec, a)
    assert b is not None
    mid = a + (b - a) // 2
    assert next_run_after(spec, mid) == b


@PROPS
@given(
    st.integers(1, 10**6),  # period in seconds
    st.integers(-(10**12), 10**13),  # anchor
    st.integers(-(10**12), 10**13),  # after
    st.integers(0, 10**7),  # jitter
    st.text(max_size=10),
)
def test_interval_lands_on_grid(
    period_s: int, anchor: int, after: int, jitter: int, job: str
) -> None:
    spec = parse_schedule(f"{period_s}s", jitter_ms=jitter)
    nxt = next_run_after(spec, after, anchor_ms=anchor, job_id=job)
    assert nxt is not None
    offset = jitter_offset_ms(job, jitter)
    assert (nxt - anchor - offset) % (period_s * 1000) == 0
    assert after < nxt <= after + period_s * 1000
    later = next_run_after(spec, after + 1, anchor_ms=anchor, job_id=job)
    assert later is not None
    assert later >= nxt


@PROPS
@given(st.text(max_size=20), st.integers(1, 10**9))
def test_jitter_within_bounds_and_stable(job: str, jitter: int) -> None:
    off = jitter_offset_ms(job, jitter)
    assert 0 <= off < jitter
    assert jitter_offset_ms(job, jitter) == off


@PROPS
@given(
    st.sampled_from(CRONS),
    st.sampled_from(ZONES),
    TIMES,
    st.text(max_size=8),
    st.integers(1, 3_600_000),
)
def test_cron_with_jitter_after_and_offset(
    text: str, tz: str, t: int, job: str, jitter: int
) -> None:
    spec = parse_schedule(text, tz=tz, jitter_ms=jitter)
    plain = parse_schedule(text, tz=tz)
    nxt = next_run_after(spec, t, job_id=job)
    assert nxt is not None
    assert nxt > t
    off = jitter_offset_ms(job, jitter)
    assert next_run_after(plain, nxt - off - 1) == nxt - off  # a real fire time, shifted
