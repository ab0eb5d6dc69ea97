"""GCRA limiter with an injected clock: spacing, bursts, penalties, eviction, waiting."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from databite_stream.models import Connection
from databite_stream.ratelimit import RateLimit, RateLimiter, rate_limit_key
from databite_stream.retry import RateLimited


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = low = 0
    for high, t in enumerate(times):
        # 1e-9: admitted times are sums of float intervals; exactness is not the property.
        while t - times[low] >= window - 1e-9:
            low += 1
        best = max(best, high - low + 1)
    return best


def test_burst_one_spaces_calls_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit(requests=5, window=1.0)
    waits = [limiter.reserve("k", limit) for _ in range(6)]
    step = 0.2 + 0.005  # W/R plus the safety margin (2 %, at least 5 ms)
    assert waits == pytest.approx([i * step for i in range(6)])
    # R+1 calls span more than W, so even a closed window (as upstreams count) sees <= R
    assert waits[5] - waits[0] > 1.0


def test_burst_allows_back_to_back_calls_but_keeps_any_window_at_r() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit(requests=4, window=1.0, burst=2)
    admitted = [clock.t + limiter.reserve("k", limit) for _ in range(12)]
    assert admitted[0] == admitted[1]  # the burst
    assert max_in_window(admitted, 1.0) == 4


def test_keys_do_not_share_budget() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit(requests=1, window=10.0)
    assert limiter.reserve("a", limit) == 0.0
    assert limiter.reserve("b", limit) == 0.0
    assert limiter.reserve("a", limit) == pytest.approx(limit.emission_interval)
    assert limit.emission_interval == pytest.approx(10.2)  # W/R + 2 % margin


def test_slot_past_max_wait_is_refused_and_not_reserved() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit(requests=1, window=5.0)
    limiter.reserve("k", limit)
    with pytest.raises(RateLimited) as info:
        limiter.reserve("k", limit, max_wait=1.0)
    assert info.value.retry_after == pytest.approx(limit.emission_interval)
    assert "deadline" in str(info.value)
    # The refused call took nothing: the next caller still gets the slot at +T.
    assert limiter.reserve("k", limit) == pytest.approx(limit.emission_interval)
    assert limiter.stats.rejected == 1


def test_penalty_blocks_key_even_without_a_declared_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limiter.penalize("k", clock.t + 2.0)
    assert limiter.blocked_until("k") == clock.t + 2.0
    assert limiter.reserve("k", None) == pytest.approx(2.0)
    assert limiter.reserve("k", RateLimit(requests=10, window=1.0)) == pytest.approx(2.0)
    assert limiter.reserve("other", None) == 0.0
    clock.t += 3
    assert limiter.blocked_until("k") is None


async def test_acquire_waits_with_injected_sleep_and_counts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limit = RateLimit(requests=2, window=1.0)
    for _ in range(4):
        await limiter.acquire("k", limit)
    assert clock.slept == pytest.approx([limit.emission_interval] * 3)
    assert limiter.stats.waits == 3
    assert limiter.stats.wait_seconds == pytest.approx(3 * limit.emission_interval)
    assert limiter.stats.admitted == 4


def test_idle_keys_are_evicted_and_max_keys_bounds_memory() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, max_keys=3, sweep_every=10**9)
    limit = RateLimit(requests=1, window=1.0)
    for key in "abc":
        limiter.reserve(key, limit)
    clock.t += 5  # every state is now in the past
    assert limiter.evict_idle() == 3
    assert len(limiter) == 0
    for key in "abcde":
        limiter.reserve(key, limit)
    assert len(limiter) == 3
    assert limiter.stats.forced_evictions == 2


def test_periodic_sweep_drops_idle_keys() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sweep_every=10)
    limit = RateLimit(requests=100, window=1.0)
    for i in range(9):
        limiter.reserve(f"k{i}", limit)
    clock.t += 10
    limiter.reserve("fresh", limit)  # 10th call sweeps
    assert len(limiter) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests": 0, "window": 1.0}, "requests must be >= 1"),
        ({"requests": 5, "window": 0.0}, "window must be > 0"),
        ({"requests": 5, "window": 1.0, "burst": 6}, "burst must be between 1 and"),
        ({"requests": 5, "window": 1.0, "strategy": "global"}, "strategy must be"),
    ],
)
def test_rate_limit_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimit(**kwargs)


class _Conn:
    def __init__(self, limit: RateLimit | None) -> None:
        self.id = "shop"
        self.rate_limit = limit


@pytest.mark.parametrize(
    ("limit", "key"),
    [
        (None, "shop:c1"),
        (RateLimit(requests=1, window=1.0), "shop:c1"),
        (RateLimit(requests=1, window=1.0, strategy="per-integration"), "shop:i1"),
    ],
)
def test_rate_limit_key_follows_the_strategy(limit: RateLimit | None, key: str) -> None:
    connection = Connection(id="c1", integration_id="i1", connector_id="shop")
    assert rate_limit_key(_Conn(limit), connection) == key


events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.5),  # gap since the previous call
        st.sampled_from(["call", "call", "call", "penalty"]),
        st.floats(min_value=0.0, max_value=3.0),  # max_wait / penalty length
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    requests=st.integers(min_value=1, max_value=8),
    window=st.floats(min_value=0.1, max_value=5.0),
    burst_fraction=st.floats(min_value=0.0, max_value=1.0),
    bounded_wait=st.booleans(),
    script=events,
)
def test_no_window_of_length_w_admits_more_than_r(
    requests: int,
    window: float,
    burst_fraction: float,
    bounded_wait: bool,
    script: list[tuple[float, str, float]],
) -> None:
    burst = 1 + round(burst_fraction * (requests - 1))
    limit = RateLimit(requests=requests, window=window, burst=burst)
    clock = FakeClock(0.0)
    limiter = RateLimiter(clock=clock, max_keys=10)
    admitted: list[float] = []
    for gap, what, amount in script:
        clock.t += gap
        if what == "penalty":
            limiter.penalize("k", clock.t + amount)
            continue
        try:
            wait = limiter.reserve("k", limit, max_wait=amount if bounded_wait else None)
        except RateLimited:
            continue
        admitted.append(clock.t + wait)
    assert max_in_window(admitted, window) <= requests


def test_pure_core_imports_no_io_frameworks() -> None:
    code = (
        "import sys, databite_stream.ratelimit, databite_stream.retry, "
        "databite_stream.models, databite_stream.redact\n"
        "bad = [m for m in ('faust', 'aiokafka', 'aiohttp') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
