"""The HTTP client handed to connector code: rate-limited, with typed errors.

Owns the mapping from HTTP outcomes to the error taxonomy of :mod:`databite_stream.retry`:

==========================  ===============================================================
outcome                     raised
==========================  ===============================================================
2xx / 3xx                   nothing (the response is returned)
429                         RateLimited(retry_after) and the key is paused until then
401, 403                    AuthError (the executor refreshes the token once)
408                         NetworkError (retryable)
other 4xx                   HttpClientError (permanent)
5xx                         ServerError(retry_after if given) (retryable)
no answer (refused/reset)   NetworkError (retryable)
body is not JSON            InvalidResponse (retryable), from :meth:`HttpResponse.json`
==========================  ===============================================================

Invariants:

* Every request first waits for a slot of the connection's rate-limit key, bounded by the
  attempt's deadline (``remaining``): a slot past the deadline raises RateLimited at once.
* Messages name the method and the URL *without* its query string (queries can carry
  tokens); response bodies are quoted at most 200 characters. The executor still redacts
  every message.
* Cancellation (the attempt's timeout) propagates untouched and closes the connection, so
  the upstream sees the client go away.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from databite_stream.ratelimit import RateLimit, RateLimiter
from databite_stream.retry import (
    AuthError,
    ConfigurationError,
    HttpClientError,
    InvalidResponse,
    NetworkError,
    RateLimited,
    ServerError,
    parse_retry_after,
)

__all__ = ("HttpClient", "HttpResponse", "SessionFactory")

SessionFactory = Callable[[], Awaitable[aiohttp.ClientSession]]
_BODY_SNIPPET = 200


def _public_url(url: str) -> str:
    return url.split("?", 1)[0]


def _snippet(body: bytes) -> str:
    text = body[:_BODY_SNIPPET].decode("utf-8", errors="replace").strip()
    return text + ("..." if len(body) > _BODY_SNIPPET else "")


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A fully read response (status 2xx/3xx)."""

    method: str
    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON; InvalidResponse (retryable) if it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise InvalidResponse(
                f"{self.method} {_public_url(self.url)} returned {self.status} with a body "
                f"that is not valid JSON ({exc}); body starts: {_snippet(self.body)!r}"
            ) from None


class HttpClient:
    """aiohttp wrapper used by connector handlers; one per attempt.

    Args:
        session_factory: returns the shared ``aiohttp.ClientSession``.
        limiter: the worker's rate limiter (None: no waiting, no 429 pause).
        rate_limit: the connector's declared limit (None: only 429 pauses apply).
        key: the rate-limit key of this connection (see ``rate_limit_key``).
        remaining: seconds left before the attempt's deadline, or None for no deadline.
        clock: the limiter's clock, to turn Retry-After into a pause deadline.
    """

    def __init__(
        self,
        *,
        session_factory: SessionFactory,
        limiter: RateLimiter | None,
        rate_limit: RateLimit | None,
        key: str,
        remaining: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session_factory = session_factory
        self._limiter = limiter
        self._rate_limit = rate_limit
        self._remaining = remaining
        self._clock = clock
        self.key = key
        self.requests_made = 0

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """Send one request after waiting for a rate-limit slot; raise typed errors."""
        method = method.upper()
        if self._limiter is not None:
            await self._limiter.acquire(self.key, self._rate_limit, max_wait=self._remaining())
        session = await self._session_factory()
        self.requests_made += 1
        shown = f"{method} {_public_url(url)}"
        try:
            async with session.request(
                method, url, params=params, json=json, data=data, headers=headers
            ) as resp:
                body = await resp.read()
                status = resp.status
                resp_headers = dict(resp.headers.items())
        except aiohttp.InvalidURL as exc:
            raise ConfigurationError(f"{shown}: invalid URL ({exc}); check base_url") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise NetworkError(f"{shown} failed without an HTTP answer: {detail}") from None
        if status < 400:
            return HttpResponse(method, url, status, resp_headers, body)
        raise self._status_error(shown, status, resp_headers, body)

    def _status_error(
        self, shown: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> Exception:
        retry_after = parse_retry_after(headers.get("Retry-After"), now_epoch_s=time.time())
        if status == 429:
            if retry_after is not None and self._limiter is not None:
                self._limiter.penalize(self.key, self._clock() + retry_after)
            wait = f"; upstream asked to wait {retry_after:.1f} s" if retry_after else ""
            return RateLimited(
                f"{shown} returned 429 Too Many Requests{wait}", retry_after=retry_after
            )
        if status in (401, 403):
            return AuthError(
                f"{shown} returned {status}: the upstream rejected the credentials "
                f"({_snippet(body)!r}); refresh the token or re-authorize the connection",
                status=status,
            )
        if status == 408:
            return NetworkError(f"{shown} returned 408 Request Timeout")
        if status >= 500:
            return ServerError(
                f"{shown} returned {status} ({_snippet(body)!r}): upstream failure",
                status=status,
                retry_after=retry_after,
            )
        return HttpClientError(
            f"{shown} returned {status}: {_snippet(body)!r}; the request was rejected and will "
            "not be retried",
            status=status,
        )

    async def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """GET ``url`` and parse the body as JSON."""
        return (await self.request("GET", url, params=params, headers=headers)).json()

    async def post_json(
        self, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        """POST ``json`` to ``url`` and parse the body as JSON."""
        return (await self.request("POST", url, json=json, headers=headers)).json()
