"""Retry policy: the error taxonomy that decides what is retried, and the backoff maths.

Connector code and the HTTP client raise these typed errors; the executor asks
:func:`decide_retry` what to do with each failed attempt.

Invariants:

* An error is retried only if it is a :class:`RetryableError` (network, 5xx, 429, timeout,
  unparsable response) and retries remain. :class:`PermanentError` (4xx other than 429,
  validation, configuration) is never retried; :class:`AuthError` is permanent here (the
  executor refreshes the token once, outside this policy).
* Backoff is exponential with *full jitter*: the delay before retry ``n`` is uniform in
  ``[0, min(cap, base * 2**(n-1))]``. A server's ``Retry-After`` is a floor on the delay; one
  longer than ``max_retry_after`` ends the run instead of blocking a worker for it.
* Every error message says what happened and what to do; none contains a secret (the
  executor redacts them, but messages are written not to need it).

Pure core: imports only the standard library and :mod:`databite_stream.models`.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from databite_stream.models import ErrorKind

__all__ = (
    "AttemptTimeout",
    "AuthError",
    "ConfigurationError",
    "ConnectorError",
    "HttpClientError",
    "InvalidResponse",
    "NetworkError",
    "PermanentError",
    "RateLimited",
    "RetryDecision",
    "RetryPolicy",
    "RetryableError",
    "ServerError",
    "ValidationFailed",
    "backoff_ceiling",
    "backoff_delay",
    "decide_retry",
    "parse_retry_after",
)


class ConnectorError(Exception):
    """Base of every typed failure of a sync or action.

    Attributes:
        kind: the ErrorKind reported in results and metrics.
        retryable: whether the retry policy may try again.
        retry_after: seconds the upstream asked us to wait before trying again, if any.
    """

    kind: ClassVar[ErrorKind] = ErrorKind.HANDLER
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RetryableError(ConnectorError):
    """A transient failure: trying again later may succeed."""

    retryable = True


class ServerError(RetryableError):
    """The upstream answered 5xx."""

    kind = ErrorKind.HTTP_5XX

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class NetworkError(RetryableError):
    """The request did not get an HTTP answer (refused, reset, DNS, socket timeout)."""

    kind = ErrorKind.NETWORK


class InvalidResponse(RetryableError):
    """The upstream answered with a body that is not what the API promises (e.g. bad JSON)."""

    kind = ErrorKind.BAD_RESPONSE


class RateLimited(RetryableError):
    """Upstream said 429, or the local budget has no slot before the attempt's deadline."""

    kind = ErrorKind.RATE_LIMITED


class AttemptTimeout(RetryableError):
    """The attempt ran past its timeout and was cancelled."""

    kind = ErrorKind.TIMEOUT


class PermanentError(ConnectorError):
    """A failure that will happen again on retry: fix the input, config or connector."""


class HttpClientError(PermanentError):
    """The upstream rejected the request with a 4xx other than 401/403/408/429."""

    kind = ErrorKind.HTTP_4XX

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthError(PermanentError):
    """The credentials were rejected (401/403) or could not be refreshed."""

    kind = ErrorKind.AUTH

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ValidationFailed(PermanentError):
    """Data did not match its model. ``errors`` are ``"<path>: <reason>"`` strings."""

    kind = ErrorKind.VALIDATION

    def __init__(self, message: str, *, errors: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors


class ConfigurationError(PermanentError):
    """The request cannot run as configured (unknown sync, mismatched connector...)."""

    kind = ErrorKind.CONFIG


# ---------------------------------------------------------------------------------------------
# Backoff policy


def backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    """Upper bound of the jittered delay after failed attempt ``attempt`` (1-based)."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    exponent = attempt - 1
    # 2**exponent overflows a float long before any sane cap; stop doubling once past it.
    if base <= 0 or exponent > 1023 or base * math.ldexp(1.0, exponent) >= cap:
        return max(0.0, cap if base > 0 else 0.0)
    return base * math.ldexp(1.0, exponent)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter backoff: uniform in ``[0, min(cap, base * 2**(attempt-1))]``.

    Args:
        attempt: 1-based number of the attempt that just failed.
        base: ceiling of the first delay, seconds.
        cap: largest ceiling, seconds.
        rng: source of randomness (inject a seeded one in tests).
    """
    return rng.uniform(0.0, backoff_ceiling(attempt, base, cap))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one sync or action is retried.

    Attributes:
        max_retries: retries after the first attempt (0 = one attempt only).
        base: ceiling of the first backoff delay, seconds (default 0.5).
        cap: largest backoff ceiling, seconds (default 30).
        max_retry_after: longest ``Retry-After`` we wait inside one run, seconds (default 60).
    """

    max_retries: int
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.base < 0 or self.cap < 0 or self.max_retry_after < 0:
            raise ValueError("base, cap and max_retry_after must be >= 0")


class RetryDecision(NamedTuple):
    """What to do after a failed attempt."""

    retry: bool
    """True: sleep ``delay`` seconds and try again."""
    delay: float
    """Seconds to wait before the next attempt (0 when not retrying)."""
    reason: str
    """Why we stop (empty when retrying), for the result's error message."""


def decide_retry(
    policy: RetryPolicy, error: BaseException, retries_done: int, rng: random.Random
) -> RetryDecision:
    """Whether to retry after ``error``, given ``retries_done`` retries already made."""
    if not isinstance(error, RetryableError):
        return RetryDecision(False, 0.0, "not retryable")
    if retries_done >= policy.max_retries:
        return RetryDecision(False, 0.0, f"gave up after {retries_done + 1} attempt(s)")
    delay = backoff_delay(retries_done + 1, policy.base, policy.cap, rng)
    if error.retry_after is not None:
        if error.retry_after > policy.max_retry_after:
            return RetryDecision(
                False,
                0.0,
                f"upstream asked to retry after {error.retry_after:.1f} s, longer than "
                f"max_retry_after={policy.max_retry_after:.1f} s; the next scheduled run "
                "will try again",
            )
        delay = max(delay, error.retry_after)
    return RetryDecision(True, delay, "")


def parse_retry_after(value: str | None, *, now_epoch_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    Returns None when absent or unparsable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_epoch_s
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)
