"""Retry policy: full-jitter bounds, what is retried, Retry-After handling."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from databite_stream.models import ErrorKind
from databite_stream.retry import (
    AttemptTimeout,
    AuthError,
    HttpClientError,
    NetworkError,
    RateLimited,
    RetryPolicy,
    ServerError,
    ValidationFailed,
    backoff_ceiling,
    backoff_delay,
    decide_retry,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "ceiling"),
    [
        (1, 0.5, 30.0, 0.5),
        (2, 0.5, 30.0, 1.0),
        (3, 0.5, 30.0, 2.0),
        (7, 0.5, 30.0, 30.0),  # 32 capped
        (10_000, 0.5, 30.0, 30.0),  # no overflow
        (1, 0.0, 30.0, 0.0),
    ],
)
def test_backoff_ceiling(attempt: int, base: float, cap: float, ceiling: float) -> None:
    assert backoff_ceiling(attempt, base, cap) == ceiling


@given(
    attempt=st.integers(min_value=1, max_value=5000),
    base=st.floats(min_value=0.0, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=100.0),
    seed=st.integers(),
)
def test_full_jitter_stays_within_zero_and_ceiling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    delay = backoff_delay(attempt, base, cap, random.Random(seed))
    assert 0.0 <= delay <= backoff_ceiling(attempt, base, cap) <= max(cap, 0.0)


def test_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(3, 1.0, 30.0, rng) for _ in range(2000)]
    assert min(delays) < 0.2
    assert max(delays) > 3.8


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        backoff_ceiling(0, 1.0, 1.0)


@pytest.mark.parametrize(
    "error",
    [
        ServerError("503", status=503),
        NetworkError("reset"),
        RateLimited("429"),
        AttemptTimeout("slow"),
    ],
)
def test_retryable_errors_are_retried_until_max_retries(error: Exception) -> None:
    policy = RetryPolicy(max_retries=2, base=1.0, cap=10.0)
    rng = random.Random(1)
    assert decide_retry(policy, error, 0, rng).retry
    assert decide_retry(policy, error, 1, rng).retry
    final = decide_retry(policy, error, 2, rng)
    assert not final.retry
    assert "gave up after 3 attempt(s)" in final.reason


@pytest.mark.parametrize(
    "error",
    [
        HttpClientError("400", status=400),
        AuthError("401", status=401),
        ValidationFailed("bad"),
        ValueError("handler bug"),
    ],
)
def test_permanent_errors_are_not_retried(error: Exception) -> None:
    decision = decide_retry(RetryPolicy(max_retries=5), error, 0, random.Random(1))
    assert decision == (False, 0.0, "not retryable")


def test_retry_after_is_a_floor_and_too_long_gives_up() -> None:
    policy = RetryPolicy(max_retries=3, base=0.01, cap=0.01, max_retry_after=10.0)
    rng = random.Random(3)
    assert decide_retry(policy, RateLimited("429", retry_after=2.0), 0, rng).delay == 2.0
    too_long = decide_retry(policy, RateLimited("429", retry_after=60.0), 0, rng)
    assert not too_long.retry
    assert "max_retry_after" in too_long.reason


def test_error_kinds() -> None:
    assert ServerError("x", status=500).kind is ErrorKind.HTTP_5XX
    assert HttpClientError("x", status=404).kind is ErrorKind.HTTP_4XX
    assert AuthError("x").kind is ErrorKind.AUTH
    assert RateLimited("x").kind is ErrorKind.RATE_LIMITED


def test_policy_validates() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        (format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True), 30.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now_epoch_s=NOW) == seconds
